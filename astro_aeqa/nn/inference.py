# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Batched reconstruction of tiles with a trained autoencoder."""

from contextlib import contextmanager

import numpy as np
import torch

from ..utils import progress_bar as _progress_bar
from .training import resolve_device

__all__ = ["reconstruct", "torch_threads", "native_bfloat16"]


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
    model : `~astro_aeqa.nn.ConvAutoencoder`
        The trained model. It is put in ``eval()`` mode and moved to
        ``device`` (and to channels-last memory format when asked).
    tiles : `~numpy.ndarray`
        Shape ``(n, ny, nx)``, normalised and finite; ``ny`` and ``nx`` are
        multiples of the model's ``config.multiple``.
    batch_size : int
        Tiles per forward pass.
    device : str or `torch.device`
        See `~astro_aeqa.nn.resolve_device`.
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
