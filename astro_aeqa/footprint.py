# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The illuminated footprint of a frame: where the sky is.

All-sky cameras image a circle of sky inside dark corners, some optics
vignette the corners, reprojected or trimmed frames have NaN or constant
borders, and raw frames have overscan strips. None of that is sky, and a
patch of it is neither good nor bad: it is left out of training,
calibration, the patch scores and the image score, and flagged
``OUTSIDE_FOOTPRINT`` (not ``LOW_QUALITY``).
"""

import numpy as np
from scipy import ndimage

from .utils import nanmedian

__all__ = ["detect_footprint"]

# A dark region is the footprint's outside when its level lies within this
# fraction of the way from the darkest block level to the sky level ...
_DARK_FRACTION = 0.25
# ... the sky stands this many noise sigmas of the dark region above it ...
_MIN_CONTRAST = 10.0
# ... and it is flat: the dark blocks' levels spread by less than this
# fraction of the contrast (a cloud's shadow has a gradient, a corner none).
_MAX_DARK_SPREAD = 0.15
# Dark blocks are outside only when their noise is under this fraction of
# the sky's (the dark corners of all-sky cameras measured 0.33-0.52, shutter
# shadows 0.75-0.79),
_MAX_OUTSIDE_NOISE = 0.6
# and a strip of whole rows or columns at most this fraction of the frame.
_MAX_STRIP = 0.15
# An inside region counts as a sky circle when this fraction of blocks agrees
# with the disc of its area and centroid (a clear hole in a cloud does not).
_DISC_AGREEMENT = 0.8
# Outside regions smaller than this fraction of the frame are ignored
# (a dark galaxy lane or a bad column is not a footprint).
_MIN_OUTSIDE_FRACTION = 0.01


def detect_footprint(data, finite=None, *, block=None):
    """
    Return the illuminated footprint of a frame: True where the sky is.

    The frame is cut into blocks. A block is outside the footprint when it
    holds no finite pixel, when it is constant (zero or constant fill,
    saturated strips), or when it is dark: near the darkest level of the
    frame, flat, and far below the sky in units of its own noise (the dark
    corners of an all-sky camera, vignetted corners, overscan). Only such
    blocks connected to the frame's border count, so a dark cloud or a
    dust lane inside the field stays in the footprint. The edge of the
    footprint is then refined to pixels.

    Parameters
    ----------
    data : 2-D `~numpy.ndarray`
        The frame.
    finite : 2-D bool `~numpy.ndarray`, optional
        Finite pixels (computed when not given).
    block : int, optional
        Block side in pixels. Default ``max(8, min(shape) // 64)``.

    Returns
    -------
    footprint : 2-D bool `~numpy.ndarray`
        True inside the footprint. All True for an ordinary frame.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa.footprint import detect_footprint
    >>> rng = np.random.default_rng(0)
    >>> y, x = np.mgrid[:256, :256]
    >>> sky = np.where(np.hypot(y - 128, x - 128) < 120, 1000.0, 10.0)
    >>> frame = rng.normal(sky, np.sqrt(sky))
    >>> fp = detect_footprint(frame)
    >>> bool(fp[128, 128]), bool(fp[2, 2]), round(float(fp.mean()), 2)
    (True, False, 0.68)
    """
    data = np.asarray(data)
    if finite is None:
        finite = np.isfinite(data)
    ny, nx = data.shape
    if block is None:
        block = max(8, min(ny, nx) // 64)
    block = int(min(block, ny, nx))
    nby, nbx = -(-ny // block), -(-nx // block)
    level, noise, n_finite = _block_statistics(data, finite, block, nby, nbx)
    empty = n_finite == 0
    constant = ~empty & (noise == 0)
    usable = ~empty & ~constant
    outside = empty | constant
    if usable.sum() >= 4:
        dark = _touching_border(_dark_blocks(level, noise, usable))
        # what is outside shows no sky: its noise is read noise, well under
        # the sky's (a shutter shadow or a cloud along an edge is as noisy)
        quiet = _quiet(dark, noise, usable)
        if quiet and _is_disc(~dark & ~outside):
            outside |= dark
        elif quiet:
            outside |= _strips(dark)
    outside = _touching_border(outside)
    if not outside.any():
        return np.ones(data.shape, bool)
    if outside.mean() < _MIN_OUTSIDE_FRACTION:
        outside &= empty | constant  # only what is plainly not data
    footprint = ~np.repeat(np.repeat(outside, block, 0), block, 1)[:ny, :nx]
    return _refine_edge(data, finite, footprint, outside, level, usable, block)


def _block_statistics(data, finite, block, nby, nbx):
    """Per block: median, MAD noise (of a sparse grid) and the number of finite pixels."""
    step = 2 if block >= 16 else 1
    b = block // step
    # every step-th pixel, NaN where not finite and beyond the frame (sampled
    # before copying: no frame-sized temporaries)
    sub = np.where(finite[::step, ::step], data[::step, ::step], np.nan)
    grid = np.full((nby * b, nbx * b), np.nan, np.float32)
    h, w = min(sub.shape[0], nby * b), min(sub.shape[1], nbx * b)
    grid[:h, :w] = sub[:h, :w]
    cells = grid.reshape(nby, b, nbx, b).transpose(0, 2, 1, 3)
    cells = cells.reshape(nby, nbx, b * b)
    n_finite = np.isfinite(cells).sum(axis=-1)
    level = nanmedian(cells)  # NaN for blocks without a finite pixel
    noise = 1.4826 * nanmedian(np.abs(cells - level[..., None]))
    # a block whose pixels take few distinct values has MAD 0: it is
    # constant only if its pixels span nothing
    filled = np.where(np.isnan(cells), level[..., None], cells)
    spread = np.nan_to_num(filled.max(axis=-1) - filled.min(axis=-1))
    noise = np.where(spread > 0, np.where(noise > 0, noise, spread / 4), 0.0)
    return level, noise, n_finite


def _dark_blocks(level, noise, usable):
    """Blocks dark enough, flat enough and far enough below the sky to be outside."""
    levels = level[usable]
    sky = float(np.percentile(levels, 80))  # the dark outside can be half a frame
    floor = float(np.percentile(levels, 1))
    contrast = sky - floor
    if contrast <= 0:
        return np.zeros(level.shape, bool)
    dark = usable & (level < floor + _DARK_FRACTION * contrast)
    if not dark.any():
        return dark
    dark_noise = float(np.median(noise[dark]))
    dark_levels = level[dark]
    spread = 1.4826 * float(np.median(np.abs(dark_levels - np.median(dark_levels))))
    if contrast < _MIN_CONTRAST * max(dark_noise, 1e-30) or spread > _MAX_DARK_SPREAD * contrast:
        return np.zeros(level.shape, bool)
    return dark


def _quiet(dark, noise, usable):
    """Whether the ``dark`` blocks are quiet: noise under _MAX_OUTSIDE_NOISE of the sky's."""
    sky = usable & ~dark
    if not (dark & usable).any() or not sky.any():
        return False
    return float(np.median(noise[dark & usable])) < _MAX_OUTSIDE_NOISE * float(
        np.median(noise[sky])
    )


def _strips(dark):
    """Thin strips of whole rows or columns of ``dark`` blocks at a border (overscan,
    prescan): at most _MAX_STRIP of the frame across."""
    strips = np.zeros(dark.shape, bool)
    for axis in (0, 1):
        full = dark.all(axis=axis)
        for run in (full, full[::-1]):
            n = int(np.argmin(run)) if not run.all() else run.size
            if n == 0 or n > _MAX_STRIP * run.size:
                continue
            index = np.arange(n) if run is full else np.arange(run.size - n, run.size)
            if axis == 0:
                strips[:, index] = True
            else:
                strips[index, :] = True
    return strips


def _is_disc(inside):
    """Whether the ``inside`` blocks are about a disc (the sky circle of an all-sky camera)."""
    n = int(inside.sum())
    if n == 0 or n == inside.size:
        return False
    y, x = np.nonzero(inside)
    cy, cx = y.mean(), x.mean()
    r2 = n / np.pi
    yy, xx = np.mgrid[: inside.shape[0], : inside.shape[1]]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r2
    return float((disc == inside).mean()) >= _DISC_AGREEMENT


def _touching_border(outside):
    """Keep the connected regions of ``outside`` that touch the frame's border."""
    labels, n = ndimage.label(outside)
    if n == 0:
        return outside
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, border[border > 0])


def _refine_edge(data, finite, footprint, outside, level, usable, block):
    """Pixel-level edge: in blocks beside the outside, smoothed pixels below the cut are outside."""
    ny, nx = data.shape
    inside_levels = level[~outside & usable]
    out_levels = level[outside & usable]
    edge_blocks = ndimage.binary_dilation(outside) & ~outside
    if inside_levels.size == 0 or out_levels.size == 0 or not edge_blocks.any():
        return footprint
    cut = float(np.median(out_levels)) + 0.5 * (
        float(np.median(inside_levels)) - float(np.median(out_levels))
    )
    near = np.repeat(np.repeat(edge_blocks, block, 0), block, 1)[:ny, :nx]
    ys, xs = np.nonzero(near.any(axis=1))[0], np.nonzero(near.any(axis=0))[0]
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    filled = np.where(finite[y0:y1, x0:x1], data[y0:y1, x0:x1], cut).astype(np.float32)
    smooth = ndimage.uniform_filter(filled, size=max(3, block // 2))
    dark = (smooth < cut) & near[y0:y1, x0:x1]
    footprint[y0:y1, x0:x1] &= ~dark
    return footprint
