# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Normalisation of frames before the autoencoder sees them.

Two normalisations are offered:

``"noise"`` (the default, chosen by the quality benchmark)
    Subtract the frame's robust sky level, divide by its robust sky noise and
    compress with ``asinh``. Pixels are then in units of the sky noise near
    zero and logarithmic for bright stars, so a cloud, the Moon or a shutter
    ramp appears as an offset the network has never seen, and a frame's
    score does not depend on its exposure time or gain.
``"minmax"`` (the paper's)
    Each network tile is scaled to [0, 1] by its own minimum and maximum.

Non-finite, saturated and masked pixels never reach the network raw: they are
replaced by the sky value (zero after normalisation) and given zero weight.
"""

from dataclasses import dataclass

import numpy as np
from astropy.stats import sigma_clip

from ._tiling import aggregate_patches
from .exceptions import InputDataError
from .utils import nanmedian

__all__ = [
    "NORMALIZATIONS",
    "SkyStatistics",
    "sky_statistics",
    "valid_pixels",
    "normalize_frame",
    "minmax_tiles",
    "subtract_tile_median",
    "subtract_local_background",
    "LocalBackground",
]

NORMALIZATIONS = ("noise", "minmax")

# asinh softening in units of the sky noise: linear within about +-3 sigma,
# logarithmic for stars, so the dynamic range of a frame stays small.
_ASINH_SOFTENING = 3.0
# subtract_local_background: blocks whose level is _FAR_FROM_SKY or more
# clear-sky sigmas from it and whose noise is under _QUIET_BLOCK times the
# clear sky's are scaled up to it, by at most _MAX_NOISE_GAIN; a jump of
# _EDGE_JUMP sigmas between neighbouring blocks is an edge
_FAR_FROM_SKY = 3.0
_QUIET_BLOCK = 0.5
_MAX_NOISE_GAIN = 30.0
_EDGE_JUMP = 2.0
# _zoomed_bands yields bands of this many pixels: its float32 temporaries stay small
_ZOOM_BAND_PIXELS = 2**19
# values of a piece of _asinh_inplace: 128 kB of float32
_ASINH_PIECE = 1 << 15


@dataclass(frozen=True)
class SkyStatistics:
    """Robust sky level and noise of a frame, in the frame's data units."""

    level: float
    noise: float


def valid_pixels(data, mask=None, *, saturation=None):
    """
    Return a boolean array, True where a pixel can be used.

    A pixel is invalid when it is NaN or inf, True in ``mask``, or at or above
    ``saturation``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._preprocessing import valid_pixels
    >>> valid_pixels(np.array([[1.0, np.nan], [5.0, 2.0]]), saturation=5.0).tolist()
    [[True, False], [False, True]]
    """
    valid = np.isfinite(data)
    if mask is not None:
        valid &= ~np.asarray(mask, dtype=bool)
    if saturation is not None:
        with np.errstate(invalid="ignore"):
            valid &= data < saturation
    return valid


def sky_statistics(data, valid, *, n_blocks=16):
    """
    Return the robust sky level and noise of a frame.

    The frame is cut into about ``n_blocks`` x ``n_blocks`` blocks. The
    level is the sigma-clipped median of the block medians, and the noise
    the median of the blocks' MAD standard deviations. A cloud, the Moon or
    a shutter shadow covering part of the frame therefore neither pulls the
    level away from the clear sky nor inflates the noise with its gradient,
    as a median over all pixels would.

    Raises
    ------
    astro_aeqa.exceptions.InputDataError
        If no valid pixel is left, or the frame is constant.
    """
    if not valid.any():
        msg = "no valid pixel: every pixel is NaN, inf, saturated or masked"
        raise InputDataError(msg)
    ny, nx = data.shape
    block = max(8, min(ny, nx) // n_blocks)
    # A sparse grid of pixels is as good for medians and much cheaper: every
    # other pixel, or every fourth in the blocks of large frames (>= 64x64 left).
    step = 4 if block >= 256 else (2 if block >= 16 else 1)
    block -= block % step  # whole steps to a block
    nby, nbx = ny // block, nx // block
    if nby == 0 or nbx == 0:
        nby, nbx, block = 1, 1, min(ny, nx)
    grid = np.s_[: nby * block : step, : nbx * block : step]
    cut = np.where(valid[grid], data[grid], np.nan)
    b = block // step
    blocks = cut.reshape(nby, b, nbx, b).transpose(0, 2, 1, 3).reshape(nby * nbx, b * b)
    medians = _nanmedian_rows(blocks)
    mad = _nanmedian_rows(np.abs(blocks - medians[:, None]))
    good = np.isfinite(medians) & np.isfinite(mad)
    if not good.any():
        values = data[valid]
        medians, mad = (
            np.array([np.median(values)]),
            np.array([np.median(np.abs(values - np.median(values)))]),
        )
        good = np.array([True])
    level = np.ma.median(sigma_clip(medians[good], sigma=2.0, maxiters=20, stdfunc="mad_std"))
    noise = 1.4826 * float(np.median(mad[good]))
    if not np.isfinite(noise) or noise <= 0:
        msg = "the frame is constant (zero sky noise): there is nothing to evaluate"
        raise InputDataError(msg)
    return SkyStatistics(level=float(level), noise=noise)


def _nanmedian_rows(a):
    """`numpy.nanmedian` of each row; rows without NaN (most) in one vectorised call."""
    out = np.full(a.shape[0], np.nan)
    has_nan = np.isnan(a).any(axis=1)
    if not has_nan.all():
        out[~has_nan] = np.median(a[~has_nan], axis=1)
    if has_nan.any():
        out[has_nan] = nanmedian(a[has_nan], axis=1)  # NaN for all-NaN rows, no warning
    return out


def normalize_frame(data, valid, *, method="noise", stats=None, out=None):
    """
    Normalise a frame for the autoencoder.

    Parameters
    ----------
    data : 2-D `~numpy.ndarray`
        The image, any float dtype.
    valid : 2-D bool `~numpy.ndarray`
        True where a pixel can be used (see `valid_pixels`).
    method : {'noise', 'minmax'}, optional
        ``'noise'`` returns ``asinh((data - level) / (3 noise))``;
        ``'minmax'`` returns the data with invalid pixels filled by the sky
        level, left for `minmax_tiles` to scale tile by tile.
    stats : `SkyStatistics`, optional
        Precomputed sky statistics.
    out : 2-D float32 `~numpy.ndarray`, optional
        Where to write the result (for example a band of a larger frame,
        filled by several threads).

    Returns
    -------
    normalized : 2-D float32 `~numpy.ndarray`
        Finite everywhere; invalid pixels hold the sky value.
    stats : `SkyStatistics`
        The sky statistics used.
    """
    if method not in NORMALIZATIONS:
        msg = f"normalization must be one of {NORMALIZATIONS}, got {method!r}"
        raise ValueError(msg)
    if stats is None:
        stats = sky_statistics(data, valid)
    if out is None:
        out = np.empty(np.shape(data), dtype=np.float32)
    if method == "noise":
        np.subtract(data, np.float32(stats.level), out=out, dtype=np.float32, casting="unsafe")
        out /= np.float32(_ASINH_SOFTENING * stats.noise)
        _asinh_inplace(out)
        out[~valid] = 0.0
    else:
        np.copyto(out, data, casting="unsafe")
        out[~valid] = stats.level
    return out, stats


def _asinh_inplace(x):
    """``arcsinh(x)`` in place, as ``sign(x) log(|x| + sqrt(x**2 + 1))``.

    2-3x faster than `numpy.arcsinh` on float32 and within 5e-7 of it for
    the values a frame normalised by its noise holds. A contiguous array is
    done in pieces whose temporaries stay in the cache (2x faster again).
    """
    if not x.flags.c_contiguous or x.size <= _ASINH_PIECE:
        return _asinh_piece(x, np.empty_like(x), np.empty_like(x))
    flat = x.reshape(-1)  # a view
    a, r = np.empty(_ASINH_PIECE, x.dtype), np.empty(_ASINH_PIECE, x.dtype)
    for start in range(0, flat.size, _ASINH_PIECE):
        piece = flat[start : start + _ASINH_PIECE]
        _asinh_piece(piece, a[: piece.size], r[: piece.size])
    return x


def _asinh_piece(x, a, r):
    """`_asinh_inplace` of ``x`` with ``a`` and ``r`` (its shape) as scratch."""
    np.abs(x, out=a)
    np.multiply(a, a, out=r)
    r += 1
    np.sqrt(r, out=r)
    r += a
    np.log(r, out=r)
    return np.copysign(r, x, out=x)


def minmax_tiles(tiles):
    """
    Scale each tile of a ``(n, ny, nx)`` stack to [0, 1] (the paper's normalisation).

    A constant tile becomes all zeros.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._preprocessing import minmax_tiles
    >>> minmax_tiles(np.array([[[2.0, 4.0], [6.0, 10.0]]])).tolist()
    [[[0.0, 0.25], [0.5, 1.0]]]
    """
    tiles = np.asarray(tiles, dtype=np.float32)
    low = tiles.min(axis=(-2, -1), keepdims=True)
    span = tiles.max(axis=(-2, -1), keepdims=True) - low
    span[span == 0] = 1.0
    return (tiles - low) / span


def subtract_tile_median(tiles):
    """
    Subtract from each tile of a ``(..., ny, nx)`` stack its own median.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._preprocessing import subtract_tile_median
    >>> subtract_tile_median(np.array([[[1.0, 2.0], [3.0, 10.0]]])).tolist()
    [[[-1.5, -0.5], [0.5, 7.5]]]
    """
    tiles = np.asarray(tiles, dtype=np.float32)
    # A sparse grid of a large tile: as good a median, 4-16x cheaper.
    side = min(tiles.shape[-2:])
    step = 4 if side >= 512 else (2 if side >= 64 else 1)
    sample = tiles[..., ::step, ::step]
    return tiles - np.median(sample, axis=(-2, -1), keepdims=True)


def subtract_local_background(x, valid, block, *, noise=None):
    """
    Subtract from a normalised frame its local background: the medians of
    ``block``-pixel blocks of the valid pixels, interpolated bilinearly.

    With a camera reference the sky is scored against the camera's clean
    sky apart from the network, so the network sees structure alone: a
    cloud that covers most of a tile no longer shifts the clear rest of it.

    Parameters
    ----------
    x : 2-D `~numpy.ndarray`
        The normalised frame (`normalize_frame`).
    valid : 2-D bool `~numpy.ndarray`
        Usable pixels.
    block : int
        Side of the background blocks, in pixels.
    noise : float, optional
        The noise of clear sky in the units of ``x`` (``1/3`` for the
        ``'noise'`` normalisation). With it, a block whose level lies 3
        ``noise`` or more from the clear sky and whose noise (scaled MAD)
        is under ``0.5 * noise``, as on a cloud that the asinh stretch
        compresses, is scaled up to ``noise`` (at most 30x): the network
        reconstructs clear sky poorly beside a noiseless region, and clean
        patches up to a few hundred pixels from a cloud would score high.
        It also sets the background ``edges``.

    Returns
    -------
    out : 2-D float32 `~numpy.ndarray`
        ``x`` minus the background, zero at invalid pixels.
    edges : 2-D bool `~numpy.ndarray` or None
        Per block, whether the background jumps by more than ``2 * noise``
        to a neighbouring block (a cloud's edge, where the interpolated
        background is off by a sigma or more); None without ``noise``.
    """
    background = LocalBackground(x, valid, block, noise=noise)
    return background.subtract(x, valid), background.edges


class LocalBackground:
    """
    The local background of a normalised frame (`subtract_local_background`),
    subtracted from any window of it: a large frame's network input is made
    a row of tiles at a time, never whole.

    It is measured on every other pixel of the frame (every pixel for
    blocks under 8 pixels or odd: `sample_step`). Given the whole frame
    ``x``, it takes that sample itself; given ``shape``, ``x`` and ``valid``
    are the sample already. `window` gives, for the normalised pixels of a
    window, the values that `subtract_local_background` gives there.
    """

    @staticmethod
    def sample_step(block):
        """The step of the pixels the background of ``block``-pixel blocks is measured on."""
        return 2 if block >= 8 and block % 2 == 0 else 1

    def __init__(self, x, valid, block, *, noise=None, shape=None):
        self.step = step = self.sample_step(block)
        if shape is None:  # x is the whole frame
            shape = x.shape
            x, valid = x[::step, ::step], valid[::step, ::step]
        self.shape, self.block = tuple(shape), block
        ny, nx = self.shape
        # the per-block statistics, computed on bands of block rows of the
        # sample: the same values, without sample-sized temporaries
        side = block // step
        band = max(side, _ZOOM_BAND_PIXELS // max(x.shape[1], 1) // side * side)
        bands = [slice(r, min(x.shape[0], r + band)) for r in range(0, x.shape[0], band)]

        def block_medians(r):
            return aggregate_patches(np.where(valid[r], x[r], np.nan), side, statistic="median")[0]

        medians = np.concatenate([block_medians(r) for r in bands])
        grid = np.where(np.isfinite(medians), medians, 0.0).astype(np.float32)
        self._background = _BilinearZoom(grid, block, self.shape)
        self._gain = None
        self.edges = None
        if noise is None:
            return
        # the largest jump of the background to any of the 8 neighbouring blocks
        padded = np.pad(medians, 1, mode="edge")
        jump = np.zeros(medians.shape)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                neighbour = padded[dy : dy + medians.shape[0], dx : dx + medians.shape[1]]
                jump = np.fmax(jump, np.abs(neighbour - medians))
        self.edges = np.nan_to_num(jump) > _EDGE_JUMP * noise

        def block_mads(r):  # the sampled pixels less the background, as the frame's
            rows = range(r.start * step, min(ny, r.stop * step), step)
            out = self._background.window(rows, slice(0, nx, step))
            np.subtract(x[r], out, out=out, dtype=np.float32)
            np.copyto(out, 0.0, where=~valid[r])
            np.abs(out, out=out)
            return aggregate_patches(out, side, weights=valid[r], statistic="median")[0]

        mad = np.concatenate([block_mads(r) for r in bands])
        block_noise = 1.4826 * np.nan_to_num(mad, nan=noise)
        quiet = (block_noise < _QUIET_BLOCK * noise) & (np.abs(medians) > _FAR_FROM_SKY * noise)
        gain = np.where(
            quiet,
            np.clip(noise / np.maximum(block_noise, 1e-6 * noise), 1.0, _MAX_NOISE_GAIN),
            1.0,
        )
        if (gain > 1).any():
            self._gain = _BilinearZoom(gain.astype(np.float32), block, self.shape)

    def window(self, x, valid, rows, cols=slice(None)):
        """``x`` (the normalised pixels of ``[rows, cols]``, slices of the
        frame) less the background, zero at invalid pixels (float32)."""
        if isinstance(rows, slice):
            rows = range(*rows.indices(self.shape[0]))
        out = np.empty(np.shape(x), np.float32)
        np.subtract(x, self._background.window(rows, cols), out=out, dtype=np.float32)
        np.copyto(out, 0.0, where=~valid)
        if self._gain is not None:
            out *= self._gain.window(rows, cols)
        return out

    def subtract(self, x, valid):
        """The whole frame less the background, band by band (float32)."""
        ny, nx = self.shape
        out = np.empty((ny, nx), np.float32)
        band = max(1, _ZOOM_BAND_PIXELS // max(nx, 1))
        for start in range(0, ny, band):
            rows = slice(start, min(ny, start + band))
            out[rows] = self.window(x[rows], valid[rows], rows)
        return out


class _BilinearZoom:
    """A per-block ``grid`` zoomed ``block`` times to ``shape`` (as
    `_zoomed_bands`), evaluated on any rows and columns."""

    def __init__(self, grid, block, shape):
        ny, nx = shape
        self.y0, y1, fy = _bilinear_axis(ny, grid.shape[0], block)
        x0, x1, fx = _bilinear_axis(nx, grid.shape[1], block)
        g = np.asarray(grid, np.float64)
        # C order: windows read whole rows (the column gather leaves them strided)
        self.rows = np.ascontiguousarray((g[:, x0] * (1 - fx) + g[:, x1] * fx), np.float32)
        self.step = np.zeros_like(self.rows)  # each row to the next
        self.step[:-1] = self.rows[1:] - self.rows[:-1]
        self.fy = np.where(y1 > self.y0, fy, 0).astype(np.float32)[:, None]

    def window(self, rows, cols=slice(None)):
        """The zoomed values of ``rows`` (a range or slice of the frame's) and ``cols``."""
        y0, fy = self.y0[rows], self.fy[rows]
        step, base = self.step[:, cols], self.rows[:, cols]
        values = np.empty((len(y0), step.shape[1]), np.float32)
        # output rows come in runs that share one grid row: one broadcast
        # multiply-add per run, no gathered copies of the grid rows
        bounds = np.flatnonzero(np.diff(y0, prepend=-1, append=-1))  # run starts, then the end
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            np.multiply(step[y0[a]], fy[a:b], out=values[a:b])
            values[a:b] += base[y0[a]]
        return values


def _zoomed_bands(grid, block, shape):
    """A per-block ``grid`` zoomed ``block`` times, bilinear between block
    centres and constant beyond the outer ones, cropped to ``shape``: yields
    ``(rows, values)`` for bands of rows (float32).

    The sampling of ``scipy.ndimage.zoom(grid, block, order=1,
    grid_mode=True, mode='nearest')``, computed separably: the grid is
    interpolated along x once, then each output row is one multiply-add of
    two of those rows. Several times faster than the general-purpose zoom,
    and the caller uses each band as it comes, without a frame-sized
    temporary. The two differ by float32 rounding (a few 1e-7).
    """
    ny, nx = shape
    zoom = _BilinearZoom(grid, block, shape)
    band = max(1, _ZOOM_BAND_PIXELS // max(nx, 1))
    for start in range(0, ny, band):
        stop = min(ny, start + band)
        yield slice(start, stop), zoom.window(range(start, stop))


def _bilinear_axis(n_out, n_in, block):
    """Per output pixel along one axis: the grid points below and above its
    centre and the weight of the one above (clamped to the grid's ends)."""
    # the coordinate as scipy.ndimage.zoom(grid_mode=True) computes it
    centre = (np.arange(n_out) + 0.5) * (n_in / (n_in * block)) - 0.5
    below = np.floor(centre).astype(np.intp)
    weight = centre - below
    return np.clip(below, 0, n_in - 1), np.clip(below + 1, 0, n_in - 1), weight
