# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The convolutional autoencoder of Jia et al. (2024, Fig. 2).

A 7x7 convolution stem, ``n_down`` stride-2 downsamplings, ``n_res_blocks``
residual blocks, ``n_down`` transposed-convolution upsamplings and a final
7x7 convolution back to one channel. Every convolution but the last is
followed by an (affine) instance normalisation and a ReLU.

This module only builds modules and runs ``forward``; training, numpy
conversion and files live in `astro_aeqa.nn.training`,
`astro_aeqa.nn.reconstructor` and `astro_aeqa.nn.serialization`.
"""

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

__all__ = [
    "AutoencoderConfig",
    "PRESETS",
    "ConvAutoencoder",
    "build_model",
    "init_weights",
]

_NORMS = ("instance", "none")


@dataclass(frozen=True)
class AutoencoderConfig:
    """
    Architecture of a ``ConvAutoencoder``.

    Parameters
    ----------
    base_channels : int
        Channels after the 7x7 stem.
    n_down : int
        Number of stride-2 downsamplings (and of upsamplings). Image sides
        must be multiples of ``2 ** n_down``.
    n_res_blocks : int
        Number of residual blocks at the lowest resolution.
    max_channels : int
        Upper limit of the channel count, which doubles at each downsampling.
    in_channels : int
        Input (and output) channels; 1 for a single-band image.
    norm : {'instance', 'none'}
        ``'instance'`` (the paper): affine `~torch.nn.InstanceNorm2d` after
        each convolution. Note that it makes the network blind to the mean
        level and the contrast of its input patch. ``'none'`` drops the
        normalisation layers.
    unshuffle : int
        Space-to-depth factor of the stem. ``1`` is the paper's 7x7
        convolution at full resolution. ``f > 1`` folds each ``f x f`` block
        of pixels into ``f**2`` channels (`~torch.nn.PixelUnshuffle`), runs
        every convolution at ``1/f`` of the resolution, and unfolds the
        output (`~torch.nn.PixelShuffle`): about ``f**2`` times fewer
        operations per pixel for the same channel counts.

    Examples
    --------
    >>> from astro_aeqa.nn import AutoencoderConfig
    >>> config = AutoencoderConfig(base_channels=8, n_res_blocks=1)
    >>> AutoencoderConfig.from_dict(config.to_dict()) == config
    True
    >>> config.n_parameters
    31169
    """

    base_channels: int = 16
    n_down: int = 2
    n_res_blocks: int = 2
    max_channels: int = 256
    in_channels: int = 1
    norm: str = "instance"
    unshuffle: int = 1

    def __post_init__(self):
        for name in ("base_channels", "max_channels", "in_channels", "unshuffle"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                msg = f"AutoencoderConfig.{name} must be a positive integer, got {value!r}"
                raise ValueError(msg)
        for name in ("n_down", "n_res_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                msg = f"AutoencoderConfig.{name} must be an integer >= 0, got {value!r}"
                raise ValueError(msg)
        if self.norm not in _NORMS:
            msg = f"AutoencoderConfig.norm must be one of {_NORMS}, got {self.norm!r}"
            raise ValueError(msg)

    @property
    def multiple(self):
        """Image sides must be multiples of this number (``unshuffle * 2 ** n_down``)."""
        return self.unshuffle * 2**self.n_down

    def channels(self):
        """Channel counts at each resolution, from full to lowest."""
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(self.n_down + 1)]

    @property
    def n_parameters(self):
        """Number of trainable parameters, computed without building the model."""
        ch = self.channels()
        affine = 2 if self.norm == "instance" else 0
        f2 = self.unshuffle**2
        kernel = 49 if self.unshuffle == 1 else 9  # 7x7 stem and head, or 3x3 after unshuffling
        n = self.in_channels * f2 * ch[0] * kernel + ch[0] + affine * ch[0]  # stem
        for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):  # down, then up (mirror)
            n += c_in * c_out * 9 + c_out + affine * c_out
            n += c_out * c_in * 9 + c_in + affine * c_in
        c = ch[-1]
        n += self.n_res_blocks * 2 * (c * c * 9 + c + affine * c)
        n += ch[0] * self.in_channels * f2 * kernel + self.in_channels * f2  # head
        return n

    def to_dict(self):
        """Return the config as a JSON-safe `dict`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """
        Build a config from `to_dict` output.

        Raises
        ------
        ValueError
            If ``d`` has keys that are not config fields.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            msg = (
                f"unknown autoencoder config keys {unknown}; known keys are {sorted(known)} "
                "(a model file from a newer astro_aeqa? upgrade astro_aeqa)"
            )
            raise ValueError(msg)
        return cls(**d)


#: Named architectures. ``small`` (the default) folds 8x8 pixel blocks into
#: channels before its convolutions, which makes it fast enough to score a
#: 4096x4096 frame in seconds on a laptop CPU; ``paper`` is the network of
#: Jia et al. (2024, Fig. 2) with 14,919,681 parameters.
PRESETS = {
    "small": AutoencoderConfig(
        base_channels=32, n_down=1, n_res_blocks=2, max_channels=256, unshuffle=8
    ),
    "paper": AutoencoderConfig(base_channels=64, n_down=2, n_res_blocks=12, max_channels=256),
}


def _norm(config, channels):
    if config.norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class _SpaceToDepth(nn.Module):
    """`~torch.nn.PixelUnshuffle`, as one reshape and permute: 2-3x faster on a CPU."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        if torch.compiler.is_compiling():  # inductor fuses torch's own op, and needs it
            return nn.functional.pixel_unshuffle(x, self.factor)
        n, c, h, w = x.shape
        f = self.factor
        x = x.reshape(n, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(n, c * f * f, h // f, w // f)


class _DepthToSpace(nn.Module):
    """`~torch.nn.PixelShuffle`, as one reshape and permute: 2-3x faster on a CPU."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        if torch.compiler.is_compiling():
            return nn.functional.pixel_shuffle(x, self.factor)
        n, c, h, w = x.shape
        f = self.factor
        x = x.reshape(n, c // (f * f), f, f, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(n, c // (f * f), h * f, w * f)


class _ResidualBlock(nn.Module):
    """conv-IN-ReLU-conv-IN plus the identity."""

    def __init__(self, config, channels):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"),
            _norm(config, channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"),
            _norm(config, channels),
        )

    def forward(self, x):
        return x + self.body(x)


class ConvAutoencoder(nn.Module):
    """
    The convolutional autoencoder with residual blocks (Jia et al. 2024, Fig. 2).

    Parameters
    ----------
    config : `AutoencoderConfig`
        The architecture.

    Examples
    --------
    >>> import torch
    >>> from astro_aeqa.nn import AutoencoderConfig, ConvAutoencoder
    >>> model = ConvAutoencoder(AutoencoderConfig(base_channels=4, n_res_blocks=1))
    >>> model(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 1, 32, 32])
    """

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, AutoencoderConfig):
            msg = (
                f"config must be an AutoencoderConfig, got {type(config).__name__}; use build_model"
            )
            raise TypeError(msg)
        self.config = config
        ch = config.channels()
        f = config.unshuffle
        layers = [_SpaceToDepth(f)] if f > 1 else []
        kernel = 7 if f == 1 else 3
        layers += [
            nn.Conv2d(
                config.in_channels * f * f,
                ch[0],
                kernel,
                padding=kernel // 2,
                padding_mode="reflect",
            ),
            _norm(config, ch[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                _norm(config, c_out),
                nn.ReLU(inplace=True),
            ]
        self.encoder = nn.Sequential(*layers)
        self.blocks = nn.Sequential(
            *[_ResidualBlock(config, ch[-1]) for _ in range(config.n_res_blocks)]
        )
        layers = []
        for c_in, c_out in zip(ch[:0:-1], ch[-2::-1], strict=True):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
                _norm(config, c_out),
                nn.ReLU(inplace=True),
            ]
        layers.append(
            nn.Conv2d(
                ch[0],
                config.in_channels * f * f,
                kernel,
                padding=kernel // 2,
                padding_mode="reflect",
            )
        )
        if f > 1:
            layers.append(_DepthToSpace(f))
        self.decoder = nn.Sequential(*layers)

    def forward(self, x):
        """
        Reconstruct ``x``.

        Parameters
        ----------
        x : `torch.Tensor`
            Shape ``(n, in_channels, ny, nx)``, with ``ny`` and ``nx`` multiples
            of `AutoencoderConfig.multiple` and at least 4 (reflection padding
            of the stem).

        Returns
        -------
        `torch.Tensor`
            The reconstruction, same shape as ``x``.
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            msg = (
                f"x must have shape (n, {self.config.in_channels}, ny, nx), got {tuple(x.shape)}; "
                "add the batch and channel axes (x[:, None])"
            )
            raise ValueError(msg)
        m = self.config.multiple
        ny, nx = x.shape[-2:]
        if ny % m or nx % m or min(ny, nx) < max(m, 4):
            msg = (
                f"image sides must be multiples of {m} (and at least {max(m, 4)}), "
                f"got (ny, nx) = ({ny}, {nx}); crop or pad the tiles"
            )
            raise ValueError(msg)
        return self.decoder(self.blocks(self.encoder(x)))


@torch.no_grad()
def init_weights(model, seed=0):
    """
    Initialise ``model`` in place from ``seed``, without touching the global RNG.

    Convolution weights follow PyTorch's default (Kaiming uniform with
    ``a=sqrt(5)``, biases uniform in ``+-1/sqrt(fan_in)``), drawn from a
    private `torch.Generator`; instance-norm scales are 1 and shifts 0.

    Parameters
    ----------
    model : `torch.nn.Module`
        The model to initialise.
    seed : int
        Seed of the generator.

    Returns
    -------
    model : `torch.nn.Module`
        The same model.
    """
    gen = torch.Generator().manual_seed(int(seed))
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            w = torch.empty(module.weight.shape, dtype=module.weight.dtype)
            nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
            module.weight.copy_(w)
            if module.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(w)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                b = torch.empty(module.bias.shape, dtype=module.bias.dtype)
                b.uniform_(-bound, bound, generator=gen)
                module.bias.copy_(b)
        elif isinstance(module, nn.InstanceNorm2d) and module.affine:
            module.weight.fill_(1.0)
            module.bias.fill_(0.0)
    return model


def build_model(config="small", *, seed=0):
    """
    Build a ``ConvAutoencoder`` from a preset name or a config, with seeded weights.

    Parameters
    ----------
    config : str, `AutoencoderConfig` or dict
        A key of ``PRESETS`` (``'small'`` or ``'paper'``), a config, or a
        config dictionary (`AutoencoderConfig.to_dict`).
    seed : int
        Seed of the weight initialisation (a private generator).

    Returns
    -------
    ``ConvAutoencoder``

    Raises
    ------
    ValueError
        If ``config`` names no preset.

    Examples
    --------
    >>> from astro_aeqa.nn import build_model
    >>> build_model("small").config.n_parameters
    222400
    """
    if isinstance(config, str):
        if config not in PRESETS:
            msg = (
                f"unknown model preset {config!r};"
                f" choose one of {sorted(PRESETS)} or pass an AutoencoderConfig"
            )
            raise ValueError(msg)
        config = PRESETS[config]
    elif isinstance(config, dict):
        config = AutoencoderConfig.from_dict(config)
    elif not isinstance(config, AutoencoderConfig):
        msg = (
            "config must be a preset name, an AutoencoderConfig or a dict, "
            f"got {type(config).__name__}"
        )
        raise TypeError(msg)
    with torch.random.fork_rng(devices=[]):  # the default init must not advance the global RNG
        model = ConvAutoencoder(config)
    return init_weights(model, seed)
