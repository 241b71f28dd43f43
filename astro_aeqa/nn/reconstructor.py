# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Running a trained autoencoder on frames: the device, the arithmetic of the
forward pass, `torch.compile`, torch's threads and batches of tiles.

`Reconstructor` is what the scoring pipeline calls; it sees float32 tiles and
returns their absolute residuals, never CCDData or FITS.
"""

import hashlib
import threading
from contextlib import contextmanager

import numpy as np
import torch

from .._tiling import extract_tiles
from ..utils import check_int
from ..utils import progress_bar as _progress_bar

__all__ = [
    "Reconstructor",
    "PRECISIONS",
    "resolve_device",
    "reconstruct",
    "torch_threads",
    "set_torch_threads",
    "native_bfloat16",
    "weights_sha",
]

#: Forward-pass arithmetic at inference -> autocast dtype (None: plain float32).
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}
# Bytes of network activations one forward batch may hold (the batch size adapts).
_ACTIVATION_BUDGET = 512 * 2**20


def resolve_device(device="auto"):
    """
    Return the `torch.device` named by ``device``.

    Parameters
    ----------
    device : str or `torch.device`
        ``'auto'`` (CUDA when available, else CPU), ``'cpu'``, ``'cuda'``,
        ``'cuda:N'``, ``'mps'``, or a `torch.device`.

    Raises
    ------
    ValueError
        If the device is unknown or not available on this machine.

    Examples
    --------
    >>> from astro_aeqa.nn import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    choices = "'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device"
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str | torch.device):
        msg = f"device must be {choices}, got {device!r}"
        raise ValueError(msg)
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, ValueError) as exc:
        msg = f"device={device!r} is not a device name; use {choices}"
        raise ValueError(msg) from exc
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            msg = (
                f"device={device!r}: CUDA is not available on this machine "
                "(CPU-only torch or no GPU); "
                "use device='cpu' or device='auto'"
            )
            raise ValueError(msg)
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            msg = f"device={device!r}: only {n} CUDA device(s) present (cuda:0 to cuda:{n - 1})"
            raise ValueError(msg)
        return dev
    if dev.type == "mps" and torch.backends.mps.is_available():
        return dev
    msg = f"device={device!r} is not available here; use {choices}"
    raise ValueError(msg)


def native_bfloat16(device):
    """
    Whether ``device`` computes bfloat16 natively (fast), not by emulation.

    True for CUDA GPUs with bfloat16 and for CPUs with AVX512-BF16 or AMX
    instructions; elsewhere bfloat16 autocast is slower than float32.

    Examples
    --------
    >>> from astro_aeqa.nn import native_bfloat16
    >>> native_bfloat16("cpu") in (True, False)
    True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        # torch's own probes of the CPU (private, hence looked up with care)
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def set_torch_threads(n):
    """Let torch use ``n`` threads (`torch.set_num_threads`: process-wide)."""
    torch.set_num_threads(int(n))


@contextmanager
def torch_threads(n):
    """
    Let torch use ``n`` threads within the block (`None`: leave it as it is).

    The setting is process-wide (`torch.set_num_threads`); the previous one
    comes back on exit. Threads started inside the block take it up.

    Examples
    --------
    >>> import torch
    >>> from astro_aeqa.nn import torch_threads
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    before = torch.get_num_threads()
    change = n is not None and n != before
    if change:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(before)


def reconstruct(
    model,
    tiles,
    *,
    batch_size=16,
    device="cpu",
    amp_dtype=None,
    channels_last=False,
    progress_bar=False,
):
    """
    Reconstruct ``tiles`` with ``model``, in batches.

    Parameters
    ----------
    model : ``ConvAutoencoder``
        The trained model. It is put in ``eval()`` mode and moved to
        ``device`` (and to channels-last memory format when asked).
    tiles : `~numpy.ndarray`
        Shape ``(n, ny, nx)``, normalised and finite; ``ny`` and ``nx`` are
        multiples of the model's ``config.multiple``.
    batch_size : int
        Tiles per forward pass.
    device : str or `torch.device`
        See ``resolve_device``.
    amp_dtype : `torch.dtype`, optional
        Run the forward pass under `torch.autocast` with this dtype (for
        example ``torch.bfloat16``). The result is float32 in any case. With
        bfloat16 (8 mantissa bits) the largest difference from the float32
        result is about 1-2 % of the output range (measured 1.0 % and 1.6 %
        on small models; the tests allow 2 %). On CPUs without native
        bfloat16 (no AVX512-BF16/AMX) it is much slower than float32.
    channels_last : bool
        Use the channels-last memory format (faster on some GPUs/CPUs).
    progress_bar : bool
        Show a tqdm bar of the batches.

    Returns
    -------
    `~numpy.ndarray`
        float32 reconstructions, shape ``(n, ny, nx)``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa.nn import build_model, reconstruct
    >>> model = build_model({"base_channels": 4, "n_res_blocks": 1})
    >>> reconstruct(model, np.zeros((3, 32, 32), np.float32)).shape
    (3, 32, 32)
    """
    tiles = np.asarray(tiles)
    if tiles.ndim != 3:
        msg = (
            f"tiles must have shape (n, ny, nx), got {tiles.shape};"
            " stack the tiles along a first axis"
        )
        raise ValueError(msg)
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        msg = f"batch_size must be a positive integer, got {batch_size!r}"
        raise ValueError(msg)
    m = model.config.multiple
    if tiles.shape[1] % m or tiles.shape[2] % m:
        msg = (
            f"tile sides must be multiples of {m} for this model, got {tiles.shape[1:]};"
            " crop or pad the tiles"
        )
        raise ValueError(msg)
    device = resolve_device(device)
    model.eval()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if any(
        p.device != device or (p.ndim == 4 and not p.is_contiguous(memory_format=layout))
        for p in model.parameters()
    ):  # only when needed: tasks on several threads may share the model
        model.to(device, memory_format=layout)
    out = np.empty(tiles.shape, dtype=np.float32)
    starts = range(0, tiles.shape[0], batch_size)
    with torch.inference_mode():
        for s in _progress_bar(starts, enabled=progress_bar, desc="reconstructing", unit="batch"):
            x = torch.from_numpy(
                np.ascontiguousarray(tiles[s : s + batch_size, None], dtype=np.float32)
            )
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                y = model(x)
            out[s : s + batch_size] = y[:, 0].float().cpu().numpy()
    return out


def weights_sha(model):
    """The first 16 hex digits of the SHA-256 of a model's weights (in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class Reconstructor:
    """
    Reconstructs tiles of a frame with a trained autoencoder.

    It holds what running the network takes: the device, the arithmetic of
    the forward pass, `torch.compile`, torch's threads and the size of the
    batches of tiles. The scoring pipeline gives it normalised float32 tiles
    and gets back their absolute residuals ``|x - x_hat|``.

    Parameters
    ----------
    model : ``ConvAutoencoder``
        The network; it is moved to ``device``.
    device : str or `torch.device`, optional
        See ``resolve_device``.
    batch_size : int, optional
        Most tiles in one forward pass (fewer when the activations of large
        tiles would exceed 512 MiB).
    precision : {'auto', 'float32', 'bfloat16'}, optional
        Arithmetic of the forward pass: ``'bfloat16'`` runs it under
        `torch.autocast`; ``'auto'`` is bfloat16 where the device computes
        it natively (``native_bfloat16``), else float32.
    compile : bool, optional
        Run the network through `torch.compile` (one static graph per
        tile-batch shape).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa.nn import Reconstructor, build_model
    >>> rec = Reconstructor(build_model({"base_channels": 4, "n_res_blocks": 1}), device="cpu")
    >>> x = np.zeros((64, 64), np.float32)
    >>> out = np.empty_like(x)
    >>> rec.residuals(x, np.array([[0, 0]]), np.array([[0, 64, 0, 64]]), 64, out)
    >>> out.shape
    (64, 64)
    """

    def __init__(self, model, *, device="auto", batch_size=16, precision="auto", compile=False):  # noqa: A002
        self.device = resolve_device(device)
        self._compiled = None  # (model, compiled module), built on first use
        self.model = model
        self.batch_size = batch_size
        self.precision = precision
        self.compile = bool(compile)

    def __repr__(self):
        return (
            f"<Reconstructor device={self.device} precision={self.precision!r} "
            f"compile={self.compile} batch_size={self.batch_size}>"
        )

    @property
    def model(self):
        """The network, on ``device``."""
        return self._model

    @model.setter
    def model(self, model):
        self._model = model.to(self.device)

    @property
    def batch_size(self):
        """Most tiles in one forward pass."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value):
        self._batch_size = check_int(value, "batch_size", minimum=1)

    @property
    def precision(self):
        """Arithmetic of the forward pass: ``'auto'``, ``'float32'`` or ``'bfloat16'``."""
        return self._precision

    @precision.setter
    def precision(self, value):
        if value != "auto" and value not in PRECISIONS:
            msg = f"precision must be one of {['auto', *sorted(PRECISIONS)]}, got {value!r}"
            raise ValueError(msg)
        self._precision = value

    def autocast_dtype(self):
        """The autocast dtype of the forward pass (None: float32)."""
        if self.precision == "auto":
            return torch.bfloat16 if native_bfloat16(self.device) else None
        return PRECISIONS[self.precision]

    @staticmethod
    def n_threads():
        """Threads that score one frame: one per core torch may use (`torch.get_num_threads`)."""
        return max(1, torch.get_num_threads())

    def threads(self, workers):
        """
        A context in which ``workers`` tasks reconstruct side by side.

        On a CPU with several workers, torch uses one thread per task (which
        uses a CPU better than torch's own threads on these small
        convolutions); the process-wide setting comes back on exit.
        """
        return torch_threads(1 if workers > 1 and self.device.type == "cpu" else None)

    def tile_side(self, shape, tile_size):
        """The tile side for a frame: ``tile_size``, or the frame's short side rounded up."""
        unit = self.model.config.multiple
        return min(tile_size, -(-min(shape) // unit) * unit)

    def tiles_per_batch(self, tile, workers=1):
        """Tiles of side ``tile`` per forward pass, for ``workers`` passes at once."""
        # The widest activation (channels x pixels at one resolution) bounds the
        # forward pass's memory: keep the batches of all workers under the budget.
        config = self.model.config
        widest = max(
            1.0, *(c / (config.unshuffle * 2**i) ** 2 for i, c in enumerate(config.channels()))
        )  # float32 values per input pixel
        per_tile = 3 * 4 * widest * tile * tile  # about three such tensors are alive at once
        return int(max(1, min(self.batch_size, _ACTIVATION_BUDGET // (per_tile * workers))))

    def prepare(self):
        """
        The module to run: the network, or its compiled form.

        Call it in the calling thread before tasks reconstruct on several
        threads: the compilation is then built once.
        """
        if not self.compile:
            return self.model
        if self._compiled is None or self._compiled[0] is not self.model:
            # one graph per tile-batch shape: dynamic shapes fail in inductor on
            # this network (torch 2.13), and a survey has few shapes
            compiled = torch.compile(self.model, dynamic=False)
            self._compiled = (self.model, _CompileAlone(compiled))
        return self._compiled[1]

    def residuals(self, x, origins, regions, tile, out, *, transform=None, model=None):
        """
        Write ``|x - x_hat|`` of the owned regions of some tiles of ``x`` into ``out``.

        Parameters
        ----------
        x : 2-D float32 `~numpy.ndarray`
            The normalised frame, at least one tile in each axis.
        origins : ``(n, 2)`` int `~numpy.ndarray`
            ``(y0, x0)`` of each tile (``astro_aeqa._tiling.tile_origins``).
        regions : ``(n, 4)`` int `~numpy.ndarray`
            ``(y1, y2, x1, x2)`` that each tile owns (``astro_aeqa._tiling.owned_regions``).
        tile : int
            Tile side.
        out : 2-D float32 `~numpy.ndarray`
            The residual frame written to.
        transform : callable, optional
            Applied to the stack of tiles before the network sees them.
        model : optional
            The module to run (`prepare`'s); default the network.
        """
        tiles = extract_tiles(x, origins, tile)
        if transform is not None:
            tiles = transform(tiles)
        recon = reconstruct(
            self.model if model is None else model,
            tiles,
            batch_size=len(tiles),
            device=self.device,
            amp_dtype=self.autocast_dtype(),
        )
        np.subtract(tiles, recon, out=recon)
        np.abs(recon, out=recon)
        for (y0, x0), (y1, y2, x1, x2), owned in zip(origins, regions, recon, strict=True):
            out[y1:y2, x1:x2] = owned[y1 - y0 : y2 - y0, x1 - x0 : x2 - x0]


class _CompileAlone:
    """A `torch.compile` module whose first call per input runs alone.

    Dynamo compiling on two threads at once deadlocks (torch 2.13); once a
    shape is compiled, tasks on several threads run it side by side.
    """

    def __init__(self, compiled):
        self.compiled = compiled
        self.lock = threading.Lock()
        self.done = set()

    def __getattr__(self, name):  # config, parameters(), eval()... of the model
        return getattr(self.compiled, name)

    def __call__(self, x):
        key = (tuple(x.shape), x.dtype, torch.is_autocast_enabled(x.device.type))
        if key in self.done:
            return self.compiled(x)
        with self.lock:
            out = self.compiled(x)
            self.done.add(key)
        return out
