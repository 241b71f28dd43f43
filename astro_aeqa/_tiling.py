# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Overlapping network tiles, seamless stitching, and the patch grid.

Two grids live here:

* **tiles** are what the network sees: ``tile_size x tile_size`` cut-outs
  that overlap by ``2 * overlap`` pixels. When stitching, each output pixel
  is taken from the tile in which it lies deepest (the central part of each
  tile, as MaxiMask does), so the edge effects of a convolutional network
  never reach the output and there are no seams.
* **patches** are the units that get a score (the paper's patches): a
  non-overlapping grid of ``patch_size x patch_size`` blocks starting at
  pixel (0, 0); the last row and column of patches may be partial.

Everything here is numpy; nothing loops over pixels in Python.
"""

import numpy as np

from .exceptions import InputDataError

__all__ = [
    "tile_origins",
    "extract_tiles",
    "stitch_tiles",
    "owned_regions",
    "iter_tile_batches",
    "patch_grid_shape",
    "aggregate_patches",
    "patch_any",
    "patches_to_pixels",
]

_STATISTICS = ("mean", "median", "trimmed_mean", "quantile")


def _check_shape(shape, name="shape"):
    try:
        ny, nx = (int(n) for n in shape)
    except (TypeError, ValueError) as exc:
        msg = f"{name} must be a (ny, nx) pair of integers, got {shape!r}"
        raise ValueError(msg) from exc
    if ny < 1 or nx < 1:
        msg = f"{name} must be positive, got {shape!r}"
        raise ValueError(msg)
    return ny, nx


def _check_size(value, name, *, minimum=1):
    if isinstance(value, bool) or int(value) != value or value < minimum:
        msg = f"{name} must be an integer >= {minimum}, got {value!r}"
        raise ValueError(msg)
    return int(value)


def _axis_starts(n, tile_size, step):
    starts = list(range(0, n - tile_size + 1, step))
    if starts[-1] != n - tile_size:
        starts.append(n - tile_size)
    return np.asarray(starts, dtype=np.intp)


def tile_origins(shape, tile_size, overlap):
    """
    Return the origins of overlapping tiles that cover an image.

    Tiles are ``tile_size x tile_size`` and step by ``tile_size - 2 * overlap``
    pixels; the last row and column of tiles are moved back to end on the
    image edge, so every pixel is covered and no tile sticks out. The step
    is never less than half a tile: an ``overlap`` above ``tile_size // 4``
    is reduced to it, so that the number of tiles (and the work and memory
    of stitching) stays proportional to the pixels, also on a thin strip
    whose short side sets the tile size.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    tile_size : int
        Side of a square tile, in pixels.
    overlap : int
        Pixels at each tile edge that are not trusted (the network's edge
        effects). Neighbouring tiles overlap by at least ``2 * overlap``
        (``overlap`` at most ``tile_size // 4``, see above).

    Returns
    -------
    origins : `~numpy.ndarray`
        ``(n_tiles, 2)`` integer array of ``(y0, x0)``, row-major order.

    Raises
    ------
    astro_aeqa.exceptions.InputDataError
        If the image is smaller than one tile.

    Examples
    --------
    >>> from astro_aeqa._tiling import tile_origins
    >>> tile_origins((6, 10), 4, 1).tolist()
    [[0, 0], [0, 2], [0, 4], [0, 6], [2, 0], [2, 2], [2, 4], [2, 6]]
    """
    ny, nx = _check_shape(shape)
    tile_size = _check_size(tile_size, "tile_size")
    overlap = _check_size(overlap, "overlap", minimum=0)
    if 2 * overlap >= tile_size:
        msg = (
            f"overlap={overlap} is too large for tile_size={tile_size}: "
            "2 * overlap must be smaller than tile_size"
        )
        raise ValueError(msg)
    step = tile_size - 2 * min(overlap, tile_size // 4)
    if ny < tile_size or nx < tile_size:
        msg = (
            f"image of {ny}x{nx} pixels is smaller than one tile of "
            f"{tile_size}x{tile_size}; use a smaller patch_size/tile_size"
        )
        raise InputDataError(msg)
    ys = _axis_starts(ny, tile_size, step)
    xs = _axis_starts(nx, tile_size, step)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.intp)


def extract_tiles(image, origins, tile_size):
    """
    Cut tiles out of an image.

    Parameters
    ----------
    image : array-like
        2-D image.
    origins : array-like
        ``(n_tiles, 2)`` tile origins ``(y0, x0)``, from `tile_origins`.
    tile_size : int
        Side of a tile.

    Returns
    -------
    tiles : `~numpy.ndarray`
        ``(n_tiles, tile_size, tile_size)`` float32 array (a copy, never a
        view of ``image``).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._tiling import extract_tiles
    >>> extract_tiles(np.arange(16).reshape(4, 4), [[0, 0], [2, 2]], 2)[1].tolist()
    [[10.0, 11.0], [14.0, 15.0]]
    """
    image = np.asarray(image)
    origins = np.asarray(origins, dtype=np.intp).reshape(-1, 2)
    tile_size = _check_size(tile_size, "tile_size")
    tiles = np.empty((len(origins), tile_size, tile_size), dtype=np.float32)
    for k, (y0, x0) in enumerate(origins):
        tiles[k] = image[y0 : y0 + tile_size, x0 : x0 + tile_size]
    return tiles


def _ownership(starts, n, tile_size):
    """
    For sorted tile starts along one axis, return the ``[lo, hi)`` range of
    pixels each tile owns: the pixels lying deepest inside it. Tile edges on
    the image border count as infinitely deep, so border tiles keep their
    border pixels.

    Only the tiles that hold a pixel are compared for it: time and memory
    are ``n`` times the most tiles over one pixel (2 or 3 with the steps of
    `tile_origins`), never tiles x pixels.
    """
    starts = np.asarray(starts, dtype=np.intp)
    pix = np.arange(n, dtype=np.intp)
    first = np.searchsorted(starts + tile_size, pix, side="right")  # first tile ending after
    last = np.searchsorted(starts, pix, side="right") - 1  # last tile starting at or before
    width = int(max(1, (last - first).max() + 1)) if n else 1
    big = np.iinfo(np.intp).max // 2
    best = np.full(n, -1, dtype=np.intp)
    owner = np.zeros(n, dtype=np.intp)
    for k in range(width):  # candidates in increasing order: ties go to the first tile
        t = first + k
        ok = t <= last
        s = starts[np.minimum(t, len(starts) - 1)]
        left = np.where(s > 0, pix - s, big)
        right = np.where(s + tile_size < n, s + tile_size - 1 - pix, big)
        depth = np.where(ok, np.minimum(left, right), -1)
        better = depth > best
        best = np.where(better, depth, best)
        owner = np.where(better, t, owner)
    lo = np.searchsorted(owner, np.arange(len(starts)), side="left")
    hi = np.searchsorted(owner, np.arange(len(starts)), side="right")
    return lo, hi


def stitch_tiles(tiles, origins, shape, overlap=None):
    """
    Stitch processed tiles back into an image, without seams.

    Each output pixel is taken from the one tile in which it lies deepest,
    so the ``overlap`` pixels at each inner tile edge are never used (tiles
    on the image border keep their border pixels). Stitching the tiles of
    an image returns the image exactly.

    Parameters
    ----------
    tiles : array-like
        ``(n_tiles, tile_size, tile_size)`` array.
    origins : array-like
        ``(n_tiles, 2)`` origins, as returned by `tile_origins` (a full grid).
    shape : tuple of int
        Output shape ``(ny, nx)``.
    overlap : int, optional
        Accepted for symmetry with `tile_origins`; the choice of pixels
        depends only on the tile positions, which already encode it.

    Returns
    -------
    image : `~numpy.ndarray`
        ``shape`` array with the dtype of ``tiles``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._tiling import tile_origins, extract_tiles, stitch_tiles
    >>> image = np.arange(70.0).reshape(7, 10)
    >>> origins = tile_origins(image.shape, 4, 1)
    >>> tiles = extract_tiles(image, origins, 4)
    >>> bool(np.array_equal(stitch_tiles(tiles, origins, image.shape, 1), image))
    True
    """
    tiles = np.asarray(tiles)
    origins = np.asarray(origins, dtype=np.intp).reshape(-1, 2)
    ny, nx = _check_shape(shape)
    if tiles.ndim != 3 or tiles.shape[1] != tiles.shape[2] or len(tiles) != len(origins):
        msg = (
            f"tiles must have shape (n_tiles, tile_size, tile_size) with n_tiles = "
            f"len(origins) = {len(origins)}, got {tiles.shape}"
        )
        raise ValueError(msg)
    regions = owned_regions(origins, (ny, nx), tiles.shape[1])
    out = np.empty((ny, nx), dtype=tiles.dtype)
    for k, (y1, y2, x1, x2) in enumerate(regions):
        y0, x0 = origins[k]
        out[y1:y2, x1:x2] = tiles[k, y1 - y0 : y2 - y0, x1 - x0 : x2 - x0]
    return out


def owned_regions(origins, shape, tile_size):
    """
    Return the pixels each tile contributes when tiles are stitched.

    Each pixel belongs to the tile in which it lies deepest (see
    `stitch_tiles`). Knowing the regions lets a caller stitch batch by batch,
    with only one batch of tiles in memory.

    Parameters
    ----------
    origins : array-like
        ``(n_tiles, 2)`` origins forming a full grid, as from `tile_origins`.
    shape : tuple of int
        Image shape ``(ny, nx)``.
    tile_size : int
        Tile side in pixels.

    Returns
    -------
    regions : `~numpy.ndarray`
        ``(n_tiles, 4)`` integer ``(y1, y2, x1, x2)`` half-open image ranges,
        in the order of ``origins``. Together they cover the image exactly once.

    Examples
    --------
    >>> from astro_aeqa._tiling import owned_regions, tile_origins
    >>> origins = tile_origins((7, 10), 4, 1)
    >>> owned_regions(origins, (7, 10), 4)[:2].tolist()
    [[0, 3, 0, 3], [0, 3, 3, 5]]
    """
    origins = np.asarray(origins, dtype=np.intp).reshape(-1, 2)
    ny, nx = _check_shape(shape)
    ys = np.unique(origins[:, 0])
    xs = np.unique(origins[:, 1])
    n_grid = len(ys) * len(xs)
    if len(origins) != n_grid or len({(int(y), int(x)) for y, x in origins}) != n_grid:
        msg = "origins must form a full grid of tiles, as returned by tile_origins"
        raise ValueError(msg)
    ylo, yhi = _ownership(ys, ny, tile_size)
    xlo, xhi = _ownership(xs, nx, tile_size)
    iy = np.searchsorted(ys, origins[:, 0])
    ix = np.searchsorted(xs, origins[:, 1])
    regions = np.stack([ylo[iy], yhi[iy], xlo[ix], xhi[ix]], axis=1)
    area = ((regions[:, 1] - regions[:, 0]) * (regions[:, 3] - regions[:, 2])).sum()
    if area != ny * nx:
        msg = f"the tiles do not cover an image of shape {(ny, nx)}; use tile_origins(shape, ...)"
        raise ValueError(msg)
    return regions


def iter_tile_batches(image, tile_size, overlap, batch_size):
    """
    Yield batches of overlapping tiles, so memory stays bounded.

    Parameters
    ----------
    image : array-like
        2-D image.
    tile_size, overlap : int
        As in `tile_origins`.
    batch_size : int
        Tiles per batch (the last batch may be smaller).

    Yields
    ------
    origins : `~numpy.ndarray`
        ``(n, 2)`` origins of this batch.
    tiles : `~numpy.ndarray`
        ``(n, tile_size, tile_size)`` float32 tiles.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._tiling import iter_tile_batches
    >>> [len(o) for o, t in iter_tile_batches(np.zeros((6, 10)), 4, 1, 3)]
    [3, 3, 2]
    """
    image = np.asarray(image)
    batch_size = _check_size(batch_size, "batch_size")
    origins = tile_origins(image.shape, tile_size, overlap)
    for start in range(0, len(origins), batch_size):
        batch = origins[start : start + batch_size]
        yield batch, extract_tiles(image, batch, tile_size)


def patch_grid_shape(shape, patch_size):
    """
    Return the shape ``(n_py, n_px)`` of the patch grid; partial patches count.

    Examples
    --------
    >>> from astro_aeqa._tiling import patch_grid_shape
    >>> patch_grid_shape((300, 517), 64)
    (5, 9)
    """
    ny, nx = _check_shape(shape)
    p = _check_size(patch_size, "patch_size")
    return (-(-ny // p), -(-nx // p))


def _blocks(arr, p, n_py, n_px, fill):
    """Pad a 2-D array to whole patches and return ``(n_py, n_px, p * p)``."""
    ny, nx = arr.shape
    if (ny, nx) != (n_py * p, n_px * p):
        arr = np.pad(arr, ((0, n_py * p - ny), (0, n_px * p - nx)), constant_values=fill)
    return arr.reshape(n_py, p, n_px, p).transpose(0, 2, 1, 3).reshape(n_py, n_px, p * p)


def _block_sum(arr, p, n_py, n_px, dtype=np.float64):
    """Per-patch sums without a transposed copy (zero padding)."""
    ny, nx = arr.shape
    if (ny, nx) != (n_py * p, n_px * p):
        arr = np.pad(arr, ((0, n_py * p - ny), (0, n_px * p - nx)))
    if arr.dtype == bool and np.dtype(dtype).kind in "iu" and p < 1 << 16:
        # counts: whole rows added first (contiguous, in uint16), then the
        # columns of each patch; 6x faster than one reduction over both axes
        rows = arr.view(np.uint8).reshape(n_py, p, n_px * p).sum(axis=1, dtype=np.uint16)
        return rows.reshape(n_py, n_px, p).sum(axis=-1, dtype=dtype)
    return arr.reshape(n_py, p, n_px, p).sum(axis=(1, 3), dtype=dtype)


def patch_any(mask, patch_size):
    """
    Return which patches hold at least one True pixel of a 2-D ``mask``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._tiling import patch_any
    >>> mask = np.zeros((3, 5), bool)
    >>> mask[2, 4] = True
    >>> patch_any(mask, 2).tolist()
    [[False, False, False], [False, False, True]]
    """
    mask = np.asarray(mask, dtype=bool)
    n_py, n_px = patch_grid_shape(mask.shape, patch_size)
    return _block_sum(mask, patch_size, n_py, n_px, dtype=np.int64) > 0


def aggregate_patches(
    values, patch_size, *, weights=None, statistic="mean", trim=0.1, q=0.5, patches=None
):
    """
    Aggregate a 2-D map (for example ``|residual|``) over each patch.

    Parameters
    ----------
    values : array-like
        2-D map. Non-finite values are excluded.
    patch_size : int
        Side of a patch. Patches start at pixel (0, 0); the last row and
        column may be partial.
    weights : array-like, optional
        Same shape as ``values``; bool or float. A pixel with weight 0 (or
        False) is excluded. For ``"mean"`` float weights give a weighted mean;
        the other statistics only use ``weights > 0`` as a selection.
    statistic : {"mean", "median", "trimmed_mean", "quantile"}, optional
        ``"mean"`` is the paper's MAE (eq. 2) when ``values`` is
        ``|residual|``; ``"trimmed_mean"`` drops the largest ``trim``
        fraction of each patch's valid values first (``floor(trim * n)``
        values), a robust mean that a few bright-star pixels do not
        dominate; ``"quantile"`` is the ``q`` quantile (linear interpolation).
    trim : float, optional
        Fraction dropped by ``"trimmed_mean"``, in [0, 1). Default 0.1.
    q : float, optional
        Quantile for ``"quantile"``, in [0, 1]. Default 0.5.
    patches : array-like of bool, optional
        ``(n_py, n_px)``: aggregate only these patches (the others get NaN),
        which is much cheaper when few are wanted. ``n_valid`` still counts
        every patch.

    Returns
    -------
    scores : `~numpy.ndarray`
        ``(n_py, n_px)`` float64 array; NaN for patches without a valid pixel.
    n_valid : `~numpy.ndarray`
        ``(n_py, n_px)`` integer count of the valid pixels of each patch.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._tiling import aggregate_patches
    >>> values = np.array([[1.0, 3.0, 5.0], [1.0, 3.0, np.nan]])
    >>> scores, n_valid = aggregate_patches(values, 2)
    >>> scores.tolist(), n_valid.tolist()
    ([[2.0, 5.0]], [[4, 1]])
    >>> aggregate_patches(values, 2, patches=[[False, True]])[0].tolist()
    [[nan, 5.0]]
    """
    values = np.asarray(values)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    if values.ndim != 2:
        msg = f"values must be a 2-D map, got shape {values.shape}"
        raise ValueError(msg)
    if statistic not in _STATISTICS:
        msg = f"statistic must be one of {_STATISTICS}, got {statistic!r}"
        raise ValueError(msg)
    if not 0.0 <= trim < 1.0:
        msg = f"trim must lie in [0, 1), got {trim!r}"
        raise ValueError(msg)
    if not 0.0 <= q <= 1.0:
        msg = f"q must lie in [0, 1], got {q!r}"
        raise ValueError(msg)
    p = _check_size(patch_size, "patch_size")
    n_py, n_px = patch_grid_shape(values.shape, p)
    if patches is not None:
        patches = np.asarray(patches, dtype=bool)
        if patches.shape != (n_py, n_px):
            msg = f"patches must have the patch-grid shape {(n_py, n_px)}, got {patches.shape}"
            raise ValueError(msg)

    valid = np.isfinite(values)
    w = None
    if weights is not None:
        w = np.asarray(weights)
        if w.shape != values.shape:
            msg = f"weights must have the shape of values {values.shape}, got {w.shape}"
            raise ValueError(msg)
        if w.dtype == bool:
            valid &= w
            w = None
        else:
            if np.any(w < 0) or not np.all(np.isfinite(w)):
                msg = "weights must be finite and >= 0 (0 excludes a pixel)"
                raise ValueError(msg)
            valid &= w > 0
    n_valid = _block_sum(valid, p, n_py, n_px, dtype=np.int64)
    scores = np.full((n_py, n_px), np.nan)

    if statistic == "mean" and patches is None:  # block sums: no copy of the map
        v = np.where(valid, values, 0)
        if w is None:
            np.divide(_block_sum(v, p, n_py, n_px), n_valid, out=scores, where=n_valid > 0)
        else:
            wv = np.where(valid, w, 0).astype(np.float64)
            wsum = _block_sum(wv, p, n_py, n_px)
            np.divide(_block_sum(v * wv, p, n_py, n_px), wsum, out=scores, where=n_valid > 0)
        return scores, n_valid

    if patches is None:
        rows = _blocks(np.where(valid, values, np.nan), p, n_py, n_px, np.nan)
        rows = rows.reshape(n_py * n_px, p * p)
        wanted = slice(None)
        row_weights = None if w is None else _blocks(np.where(valid, w, 0), p, n_py, n_px, 0)
    else:
        wanted = np.flatnonzero(patches)
        take = _selected_blocks(values, p, n_py, n_px, wanted)
        rows = np.where(_selected_blocks(valid, p, n_py, n_px, wanted), take, np.nan)
        row_weights = None if w is None else _selected_blocks(w, p, n_py, n_px, wanted)
    if row_weights is not None:
        row_weights = np.where(np.isnan(rows), 0.0, row_weights.reshape(rows.shape))
    n_rows = n_valid.reshape(-1)[wanted]
    scores.reshape(-1)[wanted] = _row_statistic(rows, n_rows, statistic, trim, q, row_weights)
    return scores, n_valid


def _selected_blocks(arr, p, n_py, n_px, index):
    """The patches ``index`` (flat, row-major) of a 2-D map as ``(len(index), p * p)`` rows."""
    ny, nx = arr.shape
    if (ny, nx) != (n_py * p, n_px * p):
        fill = False if arr.dtype == bool else np.nan
        arr = np.pad(arr, ((0, n_py * p - ny), (0, n_px * p - nx)), constant_values=fill)
    iy, ix = np.divmod(index, n_px)
    return arr.reshape(n_py, p, n_px, p)[iy, :, ix, :].reshape(len(index), p * p)


def _row_statistic(v, n_valid, statistic, trim, q, weights=None):
    """The statistic of each row of ``v`` (NaN marks an excluded value)."""
    out = np.full(v.shape[0], np.nan)
    has = n_valid > 0
    if statistic == "mean":
        if weights is None:
            total, norm = np.nansum(v, axis=-1, dtype=np.float64), n_valid
        else:
            total = np.nansum(v * weights, axis=-1, dtype=np.float64)
            norm = weights.sum(axis=-1)
        np.divide(total, norm, out=out, where=has)
        return out
    if statistic in ("median", "quantile"):
        out = _nanquantile_last_axis(v, 0.5 if statistic == "median" else q)
        out[~has] = np.nan
        return out
    # trimmed mean: the sum of the n - floor(trim * n) smallest valid values
    n_keep = n_valid - np.floor(trim * n_valid).astype(n_valid.dtype)
    total = np.zeros(n_valid.shape)
    full = n_valid == v.shape[-1]  # no NaN: a partition, much cheaper than a sort
    if full.any():
        # all values less the largest n - k: partitioning at k moves just those
        k, rows = int(n_keep[full].flat[0]), v if full.all() else v[full]
        total[full] = rows.sum(axis=-1, dtype=np.float64)
        if k < rows.shape[-1]:
            top = np.partition(rows, k, axis=-1)[..., k:]
            total[full] -= top.sum(axis=-1, dtype=np.float64)
    if (~full).any():
        # the valid sum less the n - n_keep largest values: only those few
        # need sorting, after a partition that brings the largest forward
        rows = v[~full]
        n_drop = (n_valid - n_keep)[~full]
        total[~full] = np.nansum(rows, axis=-1, dtype=np.float64)
        m = int(n_drop.max())
        if m > 0:
            negated = np.where(np.isnan(rows), np.inf, -rows)  # excluded values sort last
            top = -np.sort(np.partition(negated, m - 1, axis=-1)[:, :m], axis=-1)
            top[~np.isfinite(top)] = 0.0
            drop = np.cumsum(top, axis=-1, dtype=np.float64)
            idx = np.clip(n_drop - 1, 0, None)[:, None]
            total[~full] -= np.where(n_drop > 0, np.take_along_axis(drop, idx, axis=-1)[:, 0], 0.0)
    np.divide(total, n_keep, out=out, where=n_keep > 0)
    return out


def _nanquantile_last_axis(v, q):
    """`numpy.nanquantile` along the last axis (linear), vectorised.

    NumPy's own loops over rows that hold a NaN, which is slow for thousands
    of patches; rows without NaN take `numpy.quantile`, the others a sort.
    """
    flat = v.reshape(-1, v.shape[-1])
    out = np.full(flat.shape[0], np.nan)
    has_nan = np.isnan(flat).any(axis=1)
    if (~has_nan).any():
        full = flat if not has_nan.any() else flat[~has_nan]
        out[~has_nan] = _median_rows(full) if q == 0.5 else np.quantile(full, q, axis=1)
    if has_nan.any():
        rows = np.sort(flat[has_nan], axis=1)  # NaN sort last
        n = (~np.isnan(rows)).sum(axis=1)
        pos = q * np.maximum(n - 1, 0)
        lo = np.floor(pos).astype(np.intp)
        hi = np.ceil(pos).astype(np.intp)
        v_lo = np.take_along_axis(rows, lo[:, None], axis=1)[:, 0].astype(np.float64)
        v_hi = np.take_along_axis(rows, hi[:, None], axis=1)[:, 0].astype(np.float64)
        out[has_nan] = np.where(n > 0, v_lo + (pos - lo) * (v_hi - v_lo), np.nan)
    return out.reshape(v.shape[:-1])


def _median_rows(rows):
    """``numpy.quantile(rows, 0.5, axis=1)`` of rows without NaN, bit for bit, 4-6x faster.

    One partition at the upper middle value; the lower one of an even row is
    the largest value left of it, and the two are interpolated as
    `numpy.quantile` does (``hi - (hi - lo) * 0.5`` in the rows' dtype).
    """
    if rows.dtype.kind != "f" or np.isinf(rows).any():
        return np.quantile(rows, 0.5, axis=1)  # NumPy's (NaN) medians of rows with inf
    n = rows.shape[-1]
    k = n // 2
    part = np.partition(rows, k, axis=-1)
    hi = part[:, k]
    if n % 2:
        return hi
    lo = part[:, :k].max(axis=-1)
    return hi - (hi - lo) * rows.dtype.type(0.5)


def patches_to_pixels(patch_values, patch_size, shape):
    """
    Expand per-patch values to a pixel map of ``shape`` (partial patches cropped).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._tiling import patches_to_pixels
    >>> patches_to_pixels(np.array([[1, 2]]), 2, (1, 3)).tolist()
    [[1, 1, 2]]
    """
    patch_values = np.asarray(patch_values)
    ny, nx = _check_shape(shape)
    p = _check_size(patch_size, "patch_size")
    expected = patch_grid_shape((ny, nx), p)
    if patch_values.shape != expected:
        msg = (
            f"patch_values must have the patch-grid shape {expected} for an image of "
            f"{(ny, nx)} and patch_size={p}, got {patch_values.shape}"
        )
        raise ValueError(msg)
    out = np.repeat(np.repeat(patch_values, p, axis=0), p, axis=1)
    return out[:ny, :nx]
