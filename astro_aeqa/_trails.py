# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Linear features of a frame: satellite, aircraft and meteor trails (private).

`find_trails` looks for straight, thin features in an image given in units
of the sky noise, and `trail_mask` turns what it finds into a pixel mask
that follows each trail's measured width and stops at its end points.

The method, in the spirit of acstools' ``findsat_mrt`` (a Radon transform of
a star-cleaned image) and of a matched filter:

1. The image is binned to at most ``search_size`` pixels a side. The binned
   S/N is re-normalised by a local background and noise measured in blocks
   of about 128 pixels, so a wrong noise, correlated noise (reprojection) or
   a vignetting gradient do not fake or hide a line.
2. Sources in the binned S/N are segmented. Round or compact bright ones
   (stars, with their halo and the cross of their diffraction spikes) are
   removed; long elongated ones (bright trails, meteors) are candidates.
3. A Hough accumulator (a discrete Radon transform of the clipped, cleaned
   binned S/N, summed with `numpy.bincount`) is normalised angle by angle by
   its own robust scatter, so clumps of faint stars set the threshold
   rather than fake lines; its peaks are candidates too.
4. Every candidate is refined at full resolution along a band around the
   line: the across-line profile gives the offset and the width (FWHM), its
   drift along the line the angle, and a maximum-sum run of the matched
   filter along the line the end points. A candidate is kept when both the
   mean and the median along its extent are significant (a line through a
   few stars has a large mean but no median), and when it is neither a
   diffraction spike (short, reaching out from a bright star) nor a bleed
   column (along a detector axis, from a bright star).

5. Short segments, which the line transform spreads over the look-elsewhere
   noise of all the long lines, are searched on the frame binned to about
   1024 pixels a side: a partial fast Radon transform sums every segment
   spanning 16 to 64 rows (or columns), at two scales, in units of each
   plane's own scatter; the most significant are refined as above.
6. A trail's end is carried over a saturated (invalid) core with bright
   sides, and a head wider than the trail gets its own row.

Memory is linear in the pixels and the search does not depend on the frame
size beyond the binning; a 4096x4096 frame takes one to two seconds on one
core.

This module sits in the preprocessing layer: numpy, scipy and astropy only.
"""

import logging

import numpy as np
from astropy.table import QTable
from scipy import ndimage, optimize

from .utils import nanmean, nanmedian

__all__ = ["find_trails", "trail_mask", "TRAIL_COLUMNS"]

log = logging.getLogger(__name__)

TRAIL_COLUMNS = (
    "x0",
    "y0",
    "x1",
    "y1",
    "theta",
    "rho",
    "fwhm",
    "peak",
    "snr",
    "length",
    "method",
)

_EIGHT = np.ones((3, 3), bool)
# the brightest eighth of a trail against its median, unclipped: a chain of
# blended stars is knotty (7-8 in a dense simulated field), trails and meteors
# are not (1.0-1.5)
_MAX_PEAKINESS = 4.0
# ... but a long trail may cross a star whose wings reach hundreds of sigma over
# a good part of an eighth: the test is for short candidates only
_KNOTTY_LENGTH = 300.0
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
# a bright short candidate whose profile falls this often to under half the
# peaks on both sides is a chain of stars (a row of 3 stars on a plate: 2); a
# trail never falls so deep unless faint
_CHAIN_DIPS = 1
_CHAIN_MIN_SNR = 10.0
# the matched filter's median along a trail against what its across-line
# profile's peak gives through the filter: 0.8-1.7 for trails, 200 along a
# crease of a bright cloud's background
_MAX_FILTER_EXCESS = 5.0


def _empty_table():
    t = QTable()
    for name in TRAIL_COLUMNS:
        t[name] = np.zeros(0, dtype="U8" if name == "method" else float)
    return t


def _block_view(a, b):
    ny, nx = a.shape[0] // b, a.shape[1] // b
    return a[: ny * b, : nx * b].reshape(ny, b, nx, b)


def _block_sums(a, b):
    """Sums (float64) of the whole ``b x b`` blocks of ``a``; counts for a bool ``a``.

    Strided slices added up, column phase then row phase: 2-5x faster than
    summing a block view over its short axes. Float32 values whose block
    spans fewer than about 8 decades add up exactly in float64 (24 + 29
    bits), so the order does not matter; beyond that the sums may differ
    from NumPy's in the last bits (about 1e-15 relative).
    """
    ny, nx = a.shape[0] // b, a.shape[1] // b
    a = a[: ny * b, : nx * b]
    if a.dtype == bool:
        a, dtype = a.view(np.uint8), np.uint16 if b * b < 2**16 else np.uint32
    else:
        dtype = np.float64
    cols = a[:, 0::b].astype(dtype)
    for k in range(1, b):
        cols += a[:, k::b]
    out = cols[0::b].copy()
    for k in range(1, b):
        out += cols[k::b]
    return out.astype(np.float64, copy=False)


class ScaledSNR:
    """The S/N ``(data - level) / noise`` of a frame, float32 and zero at
    invalid pixels, computed where it is used rather than held whole.

    `find_trails` given one sums it in bands of rows and interpolates it on
    small windows around the lines it measures: 4 bytes a pixel less than
    the S/N array, with the same values.
    """

    def __init__(self, data, valid, level, noise):
        self.data, self.valid = data, valid
        self.level, self.noise = np.float32(level), np.float32(noise)
        self.shape = data.shape

    def __getitem__(self, key):
        """The S/N of ``data[key]`` (a tuple of slices)."""
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: not usable, below
            out = np.subtract(self.data[key], self.level, dtype=np.float32)
            out /= self.noise
        out[~self.valid[key]] = 0.0
        return out


# frames with fewer pixels have their S/N made whole: it is small
_WHOLE_SNR_PIXELS = 2048 * 2048
# rows of the S/N a band holds at a time while it is summed
_SNR_BAND_PIXELS = 1 << 20


def _summed_snr(image, bs):
    """A `ScaledSNR`'s usable pixels (valid and finite) and the float64 sums
    of its S/N and its usable counts in blocks of each ``b`` of ``bs``, made
    band by band (as `_block_sums` of the whole S/N would make them)."""
    ny, nx = image.shape
    # the usable pixels are the valid ones unless a valid pixel's S/N
    # overflows: a plane of their own (1 byte a pixel) only then
    valid = good = np.asarray(image.valid, bool)
    step = int(np.lcm.reduce(bs))
    band = max(step, _SNR_BAND_PIXELS // max(nx, 1) // step * step)
    sums = {b: (np.empty((ny // b, nx // b)), np.empty((ny // b, nx // b)), b) for b in bs}
    for start in range(0, ny, band):
        rows = slice(start, min(ny, start + band))
        snr = image[rows, :]  # zero where not valid
        finite = np.isfinite(snr)
        if not finite.all():
            if good is valid:
                good = valid.copy()
            good[rows] &= finite
            snr[~finite] = 0.0
        made = {}  # this band's sums by block size
        for b, (total, count, _) in sums.items():
            # from the sums of a finer size that divides this one, if any:
            # float32 values add up exactly in float64, so in any order
            finer = max((f for f in made if b % f == 0), default=None)
            if finer is None:
                made[b] = _block_sums(snr, b), _block_sums(good[rows], b)
            else:
                made[b] = tuple(_block_sums(part, b // finer) for part in made[finer])
            blocks = slice(start // b, (rows.stop - start) // b + start // b)
            total[blocks], count[blocks] = made[b]
    return good, sums


def _interpolated(snr, valid, coords):
    """``ndimage.map_coordinates(snr, coords, order=1, mode='nearest')``; on
    a `ScaledSNR` (``valid`` its usable pixels) window by window, each
    window the pixels around a run of points: the same values."""
    if isinstance(snr, np.ndarray):
        return ndimage.map_coordinates(snr, coords, order=1, mode="nearest")
    ny, nx = snr.shape
    out = np.empty(coords.shape[1], np.float32)
    chunk = 4096  # consecutive points of a line's grid lie close together
    for start in range(0, coords.shape[1], chunk):
        c = coords[:, start : start + chunk]
        y0 = int(np.clip(np.floor(c[0].min()), 0, ny - 1))
        y1 = int(np.clip(np.floor(c[0].max()) + 2, y0 + 1, ny))
        x0 = int(np.clip(np.floor(c[1].min()), 0, nx - 1))
        x1 = int(np.clip(np.floor(c[1].max()) + 2, x0 + 1, nx))
        window = snr[y0:y1, x0:x1]
        window[~valid[y0:y1, x0:x1]] = 0.0
        shifted = c - np.array([[y0], [x0]], c.dtype)
        out[start : start + c.shape[1]] = ndimage.map_coordinates(
            window, shifted, order=1, mode="nearest"
        )
    return out


def _bin(snr, valid, b, sums=None):
    """Binned S/N (the sum over valid pixels over its square root) and valid fraction.

    ``sums = (total, count, b0)``: the sums of a finer binning ``b0`` that
    divides ``b``, binned further instead of the frame.
    """
    if b == 1:
        return snr.astype(np.float32, copy=True), valid.astype(np.float32)
    if sums is not None and b % sums[2] == 0:
        r = b // sums[2]
        ny, nx = snr.shape[0] // b, snr.shape[1] // b
        total = _block_view(sums[0][: ny * r, : nx * r], r).sum(axis=(1, 3))
        count = _block_view(sums[1][: ny * r, : nx * r], r).sum(axis=(1, 3))
    else:
        total = _block_sums(snr, b)
        count = _block_sums(valid, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = total / np.sqrt(count)
    frac = count / b**2
    z[frac < 0.5] = 0.0
    return z.astype(np.float32), frac.astype(np.float32)


def _local_stats(z, good, block):
    """Background and noise of ``z`` per block, interpolated back to ``z``'s grid."""
    ny, nx = z.shape
    nby, nbx = max(1, ny // block), max(1, nx // block)
    by, bx = ny // nby, nx // nbx
    cut = np.where(good, z, np.nan)[: nby * by, : nbx * bx]
    blocks = cut.reshape(nby, by, nbx, bx).transpose(0, 2, 1, 3).reshape(nby, nbx, -1)
    n_good = np.isfinite(blocks).sum(axis=2)
    ok = n_good >= 0.25 * by * bx
    with np.errstate(all="ignore"):
        med = nanmedian(blocks, axis=2)
        mad = nanmedian(np.abs(blocks - med[..., None]), axis=2) * 1.4826
    if not ok.any():
        return None
    # blocks with too few sky pixels take the median of the others
    med = np.where(ok, med, np.nanmedian(med[ok]))
    mad = np.where(ok & (mad > 0), mad, np.nanmedian(mad[ok]))
    return med, mad, (by, bx)


def _upsample(grid, cell, shape):
    """Bilinear interpolation of a per-block grid (block centres) to ``shape``."""
    ny, nx = shape
    yy = (np.arange(ny) + 0.5) / cell[0] - 0.5
    xx = (np.arange(nx) + 0.5) / cell[1] - 0.5
    # `_interp_grid` of the rows by the columns, each corner's values taken
    # rows first then columns (not by a 2-D index): the same values, 1.6x faster
    (y0, y1, fy), (x0, x1, fx) = _corners(grid.shape[0], yy), _corners(grid.shape[1], xx)
    fy, fx = fy[:, None], fx[None, :]
    r0, r1 = grid[y0], grid[y1]
    return (
        r0[:, x0] * (1 - fy) * (1 - fx)
        + r0[:, x1] * (1 - fy) * fx
        + r1[:, x0] * fy * (1 - fx)
        + r1[:, x1] * fy * fx
    )


def _corners(n, t):
    """The grid indices either side of each ``t`` (of ``n`` nodes, clipped to
    them) and the fraction of the way to the second."""
    t = np.clip(t, 0, n - 1)
    if n == 1:
        zero = np.zeros(t.shape, int)
        return zero, zero, 0 * t
    i0 = np.minimum(np.floor(t).astype(int), n - 2)
    return i0, np.minimum(i0 + 1, n - 1), t - i0


def _interp_grid(grid, yy, xx):
    """Bilinear interpolation of ``grid`` at ``(yy, xx)`` (grid nodes; clipped to it)."""
    (y0, y1, fy), (x0, x1, fx) = _corners(grid.shape[0], yy), _corners(grid.shape[1], xx)
    return (
        grid[y0, x0] * (1 - fy) * (1 - fx)
        + grid[y0, x1] * (1 - fy) * fx
        + grid[y1, x0] * fy * (1 - fx)
        + grid[y1, x1] * fy * fx
    )


def _segments(z, threshold):
    """Label ``z > threshold`` and return per-segment moments."""
    labels, n = ndimage.label(z > threshold, structure=_EIGHT)
    if n == 0:
        return labels, None
    lab = labels.ravel()
    sel = lab > 0
    idx = lab[sel]
    yy, xx = np.divmod(np.flatnonzero(sel), z.shape[1])
    zv = z.ravel()[sel]
    m = n + 1
    area = np.bincount(idx, minlength=m).astype(float)
    sx = np.bincount(idx, xx, m)
    sy = np.bincount(idx, yy, m)
    sxx = np.bincount(idx, xx * xx.astype(float), m)
    syy = np.bincount(idx, yy * yy.astype(float), m)
    sxy = np.bincount(idx, xx * yy.astype(float), m)
    peak = np.zeros(m)
    np.maximum.at(peak, idx, zv)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx, cy = sx / area, sy / area
        vxx = sxx / area - cx**2 + 1 / 12
        vyy = syy / area - cy**2 + 1 / 12
        vxy = sxy / area - cx * cy
        tr, det = vxx + vyy, vxx * vyy - vxy**2
        disc = np.sqrt(np.maximum(tr**2 / 4 - det, 0))
        major = np.sqrt(np.maximum(tr / 2 + disc, 0))
        minor = np.sqrt(np.maximum(tr / 2 - disc, 1 / 12))
        angle = 0.5 * np.arctan2(2 * vxy, vxx - vyy)  # of the major axis, from +x
    seg = {
        "area": area,
        "x": cx,
        "y": cy,
        "major": major,
        "minor": minor,
        "angle": angle,
        "peak": peak,
    }
    return labels, seg


def _hough(xs, ys, ws, cos_t, sin_t, n_rho, rho_off, chunk=64):
    """Accumulate weights ``ws`` at pixel ``(xs, ys)`` into (theta, rho) bins of 1 pixel."""
    n_t = cos_t.size
    acc = np.zeros((n_t, n_rho), np.float64)
    if xs.size == 0:
        return acc
    xs = xs.astype(np.float32)
    ys = ys.astype(np.float32)
    ws = ws.astype(np.float64)
    if xs.size * n_t <= 2**22:
        chunk = n_t  # a small set (a trail taken out): one pass
    for i in range(0, n_t, chunk):
        c = cos_t[i : i + chunk, None].astype(np.float32)
        s = sin_t[i : i + chunk, None].astype(np.float32)
        rho = xs[None, :] * c
        rho += ys[None, :] * s
        rho += np.float32(rho_off + 0.5)
        idx = rho.astype(np.int32)
        np.clip(idx, 0, n_rho - 1, out=idx)
        idx += (np.arange(c.shape[0], dtype=np.int32) * n_rho)[:, None]
        acc[i : i + chunk] = np.bincount(
            idx.ravel(), np.broadcast_to(ws, idx.shape).ravel(), c.shape[0] * n_rho
        ).reshape(c.shape[0], n_rho)
    return acc


def _kadane(v):
    """Indices ``(i, j)`` of the run ``v[i:j]`` with the largest sum."""
    i, j = _kadane_rows(np.asarray(v)[None])
    return int(i[0]), int(j[0])


def _kadane_rows(v):
    """`_kadane` of each row of a 2-D ``v``: arrays ``(i, j)``."""
    # prefix sums; the best run ends where the sum most exceeds its minimum so far
    c = np.concatenate((np.zeros((v.shape[0], 1)), np.cumsum(v, axis=1)), axis=1)
    mins = np.minimum.accumulate(c, axis=1)
    # index of the minimum of c[:k+1]
    is_new = np.concatenate((np.ones((v.shape[0], 1), bool), c[:, 1:] < mins[:, :-1]), axis=1)
    running_min_idx = np.maximum.accumulate(np.where(is_new, np.arange(c.shape[1]), 0), axis=1)
    j = np.argmax(c - mins, axis=1)
    return running_min_idx[np.arange(v.shape[0]), j], j


def _extend(m, i, j, *, level=3.0):
    """Grow the run ``m[i:j]`` while the next samples hold S/N >= ``level``.

    Windows of 16 samples first (faint ends), then of 4 samples one step at
    a time (the last pixels of a bright end).
    """
    c = np.concatenate(([0.0], np.cumsum(m)))
    for window, stride in ((16, 8), (4, 1), (2, 1)):
        norm = np.sqrt(window)
        while i >= window and (c[i] - c[i - window]) / norm >= level:
            i -= stride
        while j + window <= m.size and (c[j + window] - c[j]) / norm >= level:
            j += stride
    return i, j


class _Frame:
    """The full-resolution S/N with its local background and noise."""

    def __init__(self, snr, valid, bg, noise, cell):
        self.snr = snr
        self.valid = valid
        self.bg = bg  # per-pixel background grid (block centres)
        self.noise = noise  # per-pixel noise grid
        self.cell = cell
        self.shape = snr.shape
        self.star_bin = None  # binned footprints of stars, left out of the refinement
        self.b = 1

    def sample(self, xs, ys):
        """Normalised S/N on a grid of points (rows along the line, bilinear).

        NaN outside the frame or on invalid pixels. The background and noise
        vary slowly: they are taken at the middle of each row.
        """
        ny, nx = self.shape
        shape = xs.shape
        xs, ys = xs.ravel(), ys.ravel()
        inside = (xs >= 0) & (xs <= nx - 1) & (ys >= 0) & (ys <= ny - 1)
        coords = np.array([np.clip(ys, 0, ny - 1), np.clip(xs, 0, nx - 1)])
        v = _interpolated(self.snr, self.valid, coords)
        bad = ~(inside & _valid_at(self.valid, coords))
        if self.star_bin is not None:
            bad |= _flat_take(
                self.star_bin, coords[0].astype(np.intp), coords[1].astype(np.intp), self.b
            )
        v[bad] = np.nan
        v = v.reshape(shape)
        mid = shape[1] // 2
        xm, ym = xs.reshape(shape)[:, mid], ys.reshape(shape)[:, mid]
        gy = (ym + 0.5) / self.cell[0] - 0.5
        gx = (xm + 0.5) / self.cell[1] - 0.5
        v -= _interp_grid(self.bg, gy, gx)[:, None]
        v /= _interp_grid(self.noise, gy, gx)[:, None]
        return v


def _deep_dips(profile, width):
    """How often a bright profile falls between bright pieces, as between stars.

    ``profile`` is the S/N along a candidate, one sample per pixel. It is
    smoothed over half its ``width`` (FWHM, pixels); a dip is a run, at
    least that long, of samples under half the highest sample on each side
    and under 0.7 of the median. Profiles whose median S/N is under
    ``_CHAIN_MIN_SNR`` have none: such valleys are a faint trail's noise.
    """
    w = max(1, round(width / 2))
    if profile.size < 3 * w:
        return 0
    p = ndimage.uniform_filter1d(profile, w, mode="nearest")
    level = float(np.median(p))
    if level < _CHAIN_MIN_SNR:
        return 0
    peaks = np.minimum(np.maximum.accumulate(p), np.maximum.accumulate(p[::-1])[::-1])
    deep = (p < 0.5 * peaks) & (p < 0.7 * level)
    # runs of at least max(2, w) samples: one low sample is noise or a pixel
    labels, n = ndimage.label(deep)
    if n == 0:
        return 0
    runs = np.bincount(labels.ravel())[1:]
    return int(np.count_nonzero(runs >= max(2, w)))


def _chord(shape, theta, rho, margin=0.0):
    """Along-line coordinates ``(t0, t1)`` where the line is inside the frame."""
    ny, nx = shape
    # line: x cos + y sin = rho; direction (-sin, cos); foot point rho*(cos, sin)
    c, s = np.cos(theta), np.sin(theta)
    px, py = rho * c, rho * s
    dx, dy = -s, c
    lo, hi = -np.inf, np.inf
    for p, d, top in ((px, dx, nx - 1), (py, dy, ny - 1)):
        if abs(d) < 1e-12:
            if p < -margin or p > top + margin:
                return None
            continue
        a, b = (-margin - p) / d, (top + margin - p) / d
        lo, hi = max(lo, min(a, b)), min(hi, max(a, b))
    if hi - lo < 2:
        return None
    return lo, hi


def _profile_fit(d, prof):
    """Centre, sigma and amplitude of a peak in an across-line profile."""
    good = np.isfinite(prof)
    if good.sum() < 5:
        return None
    d, prof = d[good], prof[good]
    # a straight baseline through both wings: a sky gradient across the band
    # must not widen the trail
    wings = np.abs(d) > 0.6 * np.abs(d).max()
    if d.size > 8 and (d[wings] < 0).sum() >= 2 and (d[wings] > 0).sum() >= 2:
        slope, icpt = np.polyfit(d[wings], prof[wings], 1)
        base = icpt + slope * d
    else:
        base = np.zeros_like(prof)
    p = prof - base
    # smooth a little before picking the peak, so noise does not pick it
    ps = ndimage.uniform_filter1d(p, 3, mode="nearest")
    k = int(np.argmax(ps))
    amp = ps[k]
    if amp <= 0:
        return None
    # half-maximum crossings around the peak
    half = amp / 2
    lo = k
    while lo > 0 and ps[lo - 1] > half:
        lo -= 1
    hi = k
    while hi < ps.size - 1 and ps[hi + 1] > half:
        hi += 1
    step = d[1] - d[0]
    fwhm0 = max((hi - lo + 1) * step, step)
    centre0 = d[k]
    # a Gaussian fit near the peak: centre, width and amplitude
    near = np.abs(d - centre0) <= max(2.5 * fwhm0, 3.0)
    try:
        # curve_fit's Levenberg-Marquardt fit (leastsq) without the
        # covariance it would warn about: silencing a warning is not
        # thread-safe, and frames are scored on threads
        x, y = np.asarray(d[near], float), np.asarray(p[near], float)
        if y.size < 3:
            raise RuntimeError
        p0 = np.array((amp, centre0, fwhm0 / _FWHM_PER_SIGMA), float)
        popt, _, _, _, ier = optimize.leastsq(
            lambda q: _gauss(x, *q) - y, p0, full_output=True, maxfev=200
        )
        if ier not in (1, 2, 3, 4):  # as curve_fit: no optimum found
            raise RuntimeError
        a, centre, sigma = float(popt[0]), float(popt[1]), abs(float(popt[2]))
        if not (a > 0 and abs(centre - centre0) < fwhm0 + 1 and 0.2 < sigma < 3 * fwhm0 + 2):
            raise RuntimeError
    except (RuntimeError, ValueError):
        a, centre, sigma = float(amp), float(centre0), fwhm0 / _FWHM_PER_SIGMA
    return centre, sigma, a, float(np.median(base))


def _gauss(x, a, mu, sigma):
    return a * np.exp(-0.5 * ((x - mu) / sigma) ** 2)


class _Finder:
    def __init__(
        self, frame, *, min_snr, min_length, max_width, clip, spike_factor, bleed_angle, bleed_peak
    ):
        self.f = frame
        self.min_snr = min_snr
        self.min_length = min_length
        self.max_width = max_width
        self.clip = clip
        self.spike_factor = spike_factor
        self.bleed_angle = bleed_angle
        self.bleed_peak = bleed_peak
        self.stars = np.zeros((0, 4))  # x, y, radius, peak (full-resolution pixels)

    def refine(self, theta, rho, width_guess, half_band, *, near=None, coarse=1):
        """Refine a line; return a dict or None.

        ``near = (x, y, reach)`` keeps the search within ``reach`` pixels of
        ``(x, y)`` along the line (a short candidate), unless the trail found
        runs to that limit. ``coarse`` samples every ``coarse``-th row along
        the line in the first iterations (large frames).
        """
        f = self.f
        for _ in range(3):
            chord = _chord(f.shape, theta, rho)
            if chord is None:
                return None
            res = self._measure(
                theta,
                rho,
                *chord,
                width_guess,
                half_band,
                window=_window(theta, near),
                step_t=coarse,
            )
            if res is None or res["snr"] < 0.5 * self.min_snr:
                return None  # nothing there: do not spend more time on it
            theta, rho, sigma = res["theta"], res["rho"], res["sigma"]
            width_guess = sigma * _FWHM_PER_SIGMA
            half_band = min(max(4.0, 4 * width_guess), 2 * self.max_width)
        chord = _chord(f.shape, theta, rho)
        if chord is None:
            return None
        window = _window(theta, near)
        res = self._measure(theta, rho, *chord, width_guess, half_band, final=True, window=window)
        if (
            res is not None
            and window is not None
            and (res["t0"] <= window[0] + 2 or res["t1"] >= window[1] - 2)
        ):
            # it runs on: a longer trail than the candidate
            res = self._measure(theta, rho, *chord, width_guess, half_band, final=True)
        return res

    def _measure(
        self, theta, rho, t0, t1, width_guess, half_band, final=False, window=None, step_t=1
    ):
        f = self.f
        c, s = np.cos(theta), np.sin(theta)
        lo, hi = (t0, t1) if window is None else (max(t0, window[0]), min(t1, window[1]))
        ts = np.arange(np.ceil(lo), np.floor(hi) + 1.0, 1 if final else step_t)
        if ts.size < 3:
            return None
        step = 0.5 if half_band < 12 else (1.0 if half_band < 40 else 2.0)
        ds = np.arange(-half_band, half_band + step / 2, step)
        # sample points: foot (rho c, rho s) + t (-s, c) + d (c, s)
        xs = (rho + ds)[None, :] * c - ts[:, None] * s
        ys = (rho + ds)[None, :] * s + ts[:, None] * c
        v = f.sample(xs, ys)
        # keep stars from ruling the profile (in place: np.clip is slow)
        vc = np.minimum(v, self.clip * 3)
        np.maximum(vc, -self.clip * 3, out=vc)
        # matched filter along the line with the current width
        sigma = max(width_guess / _FWHM_PER_SIGMA, 0.5)
        # less the level of the band's wings, row by row: a background left by
        # the coarse sky model must not add up along a long line
        wings = np.abs(ds) >= max(3.0 * sigma + 1.0, 0.5 * half_band)
        if wings.sum() >= 4:
            level = nanmedian(vc[:, wings], axis=1)
            level = ndimage.uniform_filter1d(np.nan_to_num(level), 15, mode="nearest")
            v = v - level[:, None]
            vc = vc - level[:, None]
        g = np.exp(-0.5 * (ds / sigma) ** 2)
        g_norm = g / np.sqrt(np.sum(g**2) * step)  # unit noise for independent pixels
        fin = np.isfinite(vc)
        m = np.where(fin, vc, 0.0) @ g_norm * step
        covered = fin @ (g**2) / np.sum(g**2) > 0.5
        m[~covered] = 0.0
        if covered.sum() < 3:
            return None
        # extent: the run with the largest excess over half the trail level
        # a running median: stars on the line are short and do not set the level
        sm = ndimage.median_filter(np.where(covered, m, 0.0), 31, mode="constant")
        k0 = max(np.max(sm[covered]) / 2, 0.3)
        cap = 8 * k0 + 2
        i = j = 0
        for _ in range(5):
            # (a star or a masked pixel on the line costs a little: the run
            # bridges it, but does not reach into masked stretches)
            i, j = _kadane(np.where(covered, np.minimum(m, cap) - k0, -0.25 * k0))
            if j - i < 3:
                return None
            seg = m[i:j][covered[i:j]]
            level = float(np.median(seg)) if seg.size else 0.0
            new = max(level / 2, 0.3)
            if abs(new - k0) < 0.02 * k0:
                break
            k0, cap = new, 4 * level + 2
        # a meteor fades towards its ends: go on while a short window is still
        # significant (hysteresis), so the mask covers the faint ends too
        core = slice(i, j)  # the run the S/N tests judge
        i, j = _extend(np.where(covered, m, 0.0), i, j)
        sel = slice(i, j)
        # across profile over the extent: the median is robust to stars on the line
        with np.errstate(all="ignore"):
            rows = v[sel]
            # a few hundred rows measure the profile well enough
            prof = nanmedian(rows[:: max(1, rows.shape[0] // 400)], axis=0)
        fit = _profile_fit(ds, prof)
        if fit is None:
            return None
        d0, sig, amp, _base = fit
        new_rho = rho + d0
        new_theta = theta
        # angle from the drift of the centre along the extent
        n_chunks = int(np.clip((j - i) // 40, 2, 8))
        edges = np.linspace(i, j, n_chunks + 1).astype(int)
        cen, wts, tc = [], [], []
        win = np.abs(ds - d0) <= max(3 * sig, 1.5)
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            if b - a < 2:
                continue
            with np.errstate(all="ignore"):
                p = nanmean(vc[a:b][:, win], axis=0)
            if not np.all(np.isfinite(p)):
                continue
            p = p - np.median(prof[~win]) if (~win).any() else p
            pw = np.clip(p, 0, None)
            if pw.sum() <= 0:
                continue
            cen.append(np.sum(pw * ds[win]) / pw.sum())
            wts.append(pw.sum())
            tc.append(0.5 * (ts[a] + ts[b - 1]))
        cen, wts, tc = np.array(cen), np.array(wts), np.array(tc)
        ok = np.isfinite(cen) & np.isfinite(wts) & (wts > 0)
        if ok.sum() >= 2:
            slope, icpt = np.polyfit(tc[ok], cen[ok], 1, w=np.sqrt(wts[ok]))
            # small rotation: d(t) = icpt + slope t  ->  theta -= slope
            if abs(slope) < 0.05:
                new_theta = theta - np.arctan(slope)
                new_rho = rho + icpt
        tt0, tt1 = float(ts[i]), float(ts[j - 1])
        # a trail that ends within a few pixels of the frame edge goes on to it
        snap = max(8.0, 3 * sig * _FWHM_PER_SIGMA)
        if tt0 - t0 <= snap:
            tt0 = float(t0)
        if t1 - tt1 <= snap:
            tt1 = float(t1)
        out = {
            "theta": float(new_theta) % (2 * np.pi),
            "rho": float(new_rho),
            "t0": tt0,
            "t1": tt1,
            "sigma": float(max(sig, 0.4)),
            "amp": amp,
        }
        seg = m[core][covered[core]]
        n = max(seg.size, 1)
        out["snr"] = float(np.sum(seg) / np.sqrt(n))
        if not final:
            return out  # an iteration of `refine`: the line, its width and S/N are all it uses
        centre = np.abs(ds - d0) <= max(2 * sig, 1.0)
        out["gaps"] = float(np.mean(~np.isfinite(v[sel][:, centre])))
        out["coverage"] = float(np.mean(covered[core]))
        out["median_snr"] = float(np.median(seg) * np.sqrt(n)) if seg.size else 0.0
        # the weakest quarter against the mean: a trail is even, star pairs are not
        quarters = [q.mean() for q in np.array_split(seg, 4) if q.size]
        out["evenness"] = float(min(quarters) / max(np.mean(seg), 1e-6)) if quarters else 0.0
        eighths = [q.mean() for q in np.array_split(seg, 8) if q.size]
        level = max(float(np.median(seg)), 1e-6) if seg.size else 1e-6
        out["evenness8"] = float(min(eighths) / level) if eighths else 0.0
        # the same without the clip: a chain of stars is flat only when clipped
        raw = (np.where(np.isfinite(v[core]), v[core], 0.0) @ g_norm * step)[covered[core]]
        # (medians of each eighth: a star crossing a long trail fills little of one)
        pieces = [np.median(q) for q in np.array_split(raw, 8) if q.size]
        level_raw = max(float(np.median(raw)), 1e-6) if raw.size else 1e-6
        out["peakiness"] = float(max(pieces) / level_raw) if pieces else np.inf
        out["dips"] = _deep_dips(raw, sig * _FWHM_PER_SIGMA)
        out["profile_t"] = ts[sel][covered[sel]]
        out["profile_m"] = m[sel][covered[sel]]
        # the endpoints in pixels
        out["x0"], out["y0"] = rho * c - tt0 * s, rho * s + tt0 * c
        out["x1"], out["y1"] = rho * c - tt1 * s, rho * s + tt1 * c
        out["theta_used"], out["rho_used"] = theta, rho
        return out

    def grow_ends(self, res, *, level=3.0, gap=3):
        """Carry a trail's end points over a bright, saturated end (a meteor's head).

        Pixels saturated or masked on input are left out of the search, so a
        trail stops where its core is invalid. Beyond each end, a row across
        the line still belongs to the trail while its centre is invalid and
        the valid pixels beside it are bright (``level`` sigma), or while its
        centre itself is that bright; ``gap`` rows may fail in a row.
        """
        f = self.f
        theta, rho = res["theta_used"], res["rho_used"]
        c, s = np.cos(theta), np.sin(theta)
        fwhm = res["sigma"] * _FWHM_PER_SIGMA
        core = max(1.5, 0.75 * fwhm)
        ds = np.arange(-np.ceil(core + 10), np.ceil(core + 10) + 0.5)
        inner = np.abs(ds) <= core
        near = (np.abs(ds) <= core + 4) & ~inner
        heads = []
        length = res["t1"] - res["t0"]
        reach = int(max(30.0, 0.5 * length))
        chord = _chord(f.shape, theta, rho)
        if chord is None:
            return res
        for sign, key in ((-1, "t0"), (1, "t1")):
            t_end = res[key]
            ts = t_end + sign * np.arange(1, reach + 1)
            ts = ts[(ts >= chord[0]) & (ts <= chord[1])]
            if ts.size == 0:
                continue
            xs = (rho + ds)[None, :] * c - ts[:, None] * s
            ys = (rho + ds)[None, :] * s + ts[:, None] * c
            coords = np.array([ys.ravel(), xs.ravel()])
            v = _interpolated(f.snr, f.valid, coords).reshape(xs.shape)
            ok = _valid_at(f.valid, coords).reshape(xs.shape)
            v = np.where(ok, v, np.nan)
            with np.errstate(all="ignore"):
                centre = nanmean(v[:, inner], axis=1)
                side = nanmedian(v[:, near], axis=1)
            # (an invalid core inside the frame's valid pixels: not the edge of
            # a footprint or of a masked region, where the whole row is invalid)
            saturated = (~ok[:, inner]).any(axis=1) & (side >= level) & ok[:, 0] & ok[:, -1]
            bright = centre >= level
            on = np.nan_to_num(saturated | bright).astype(bool)
            last, misses = 0, 0
            for k, flag in enumerate(on):
                if flag:
                    last, misses = k + 1, 0
                else:
                    misses += 1
                    if misses > gap:
                        break
            if last:
                res[key] = float(ts[last - 1])
                # where the head lies across the band, and how wide it is: the
                # run of bright or invalid pixels through the middle of each row
                lit = ~ok | (np.nan_to_num(v) >= level)
                rows = np.flatnonzero(on[:last])
                offs, widths = [], []
                for r in rows:
                    lab, _ = ndimage.label(lit[r])
                    mid = lab[np.abs(ds) <= core]
                    mid = mid[mid > 0]
                    if mid.size:
                        sel = np.isin(lab, np.unique(mid))
                        offs.append(ds[sel].mean())
                        widths.append(ds[sel].max() - ds[sel].min() + 1)
                if len(offs) >= 3 and np.median(widths) > 2 * (1.5 * fwhm + 1) - 1:
                    tt = ts[rows[: len(offs)]] if len(offs) == rows.size else None
                    if tt is not None:
                        a, b0 = np.polyfit(tt, offs, 1)
                        heads.append((tt[0], tt[-1], a, b0, float(np.median(widths))))
        t0, t1 = res["t0"], res["t1"]
        res["x0"], res["y0"] = rho * c - t0 * s, rho * s + t0 * c
        res["x1"], res["y1"] = rho * c - t1 * s, rho * s + t1 * c
        # a head wider than the trail's mask: its own band (method 'head')
        res["heads"] = []
        for ta, tb, a, b0, width in heads:
            da, db = b0 + a * ta, b0 + a * tb
            res["heads"].append(
                {
                    "x0": (rho + da) * c - ta * s,
                    "y0": (rho + da) * s + ta * c,
                    "x1": (rho + db) * c - tb * s,
                    "y1": (rho + db) * s + tb * c,
                    # the mask reaches 1.5 FWHM + 1 pixel each side
                    "fwhm": max((width / 2 + 1) / 1.5, fwhm),
                }
            )
        return res

    def judge(self, res):
        """Why a refined candidate is not a trail (a string), or None if it is."""
        length = res["t1"] - res["t0"] + 1
        fwhm = res["sigma"] * _FWHM_PER_SIGMA
        if length < self.min_length:
            return "short"
        if res["snr"] < self.min_snr:
            return "faint"
        if res["median_snr"] < max(0.5 * self.min_snr, 0.6 * res["snr"]):
            return "clumpy"
        if fwhm > self.max_width:
            return "wide"
        if length < 6 * fwhm or (fwhm > 8 and length < 20 * fwhm):
            # wide and short: a galaxy or a blend; a wide one (sky structure, a
            # cloud's edge, the horizon glow) must be long to be a trail
            return "blob"
        if (length < 8 * fwhm or (res["amp"] < 3 and length < 15 * fwhm)) and res["evenness"] < 0.8:
            # a short and wide one, or a faint one, must be even along its
            # length: an edge-on galaxy is brightest in its middle
            return "blob"
        if res["coverage"] < 0.6:
            return "gappy"  # mostly under stars or invalid pixels
        # the matched filter along the line must be the across-line profile's
        # peak seen through the filter: far above it, the band holds a step
        # or a crease of the background (a bright cloud), not a line
        per_sample = res["median_snr"] / np.sqrt(max(length, 1.0))
        expected = res["amp"] * np.sqrt(res["sigma"] * np.sqrt(np.pi))
        if per_sample > _MAX_FILTER_EXCESS * max(expected, 1e-6):
            return "offset"
        if res["evenness"] < 0.5 or res["evenness8"] < 0.3:
            return "uneven"
        if res["peakiness"] > _MAX_PEAKINESS and length < _KNOTTY_LENGTH:
            return "knotty"
        if res["dips"] >= _CHAIN_DIPS and length < _KNOTTY_LENGTH:
            return "chain"  # bright pieces with sky between them: stars in a row
        theta, rho = res["theta_used"], res["rho_used"]
        line_angle = (theta + np.pi / 2) % (np.pi / 2)
        # (a short one is measured less well: a 50-pixel piece of a 3-pixel bleed
        # column may come out a few degrees off its axis)
        tolerance = np.deg2rad(self.bleed_angle)
        if res["amp"] >= self.bleed_peak:
            tolerance = max(tolerance, np.arctan(2 * fwhm / length))
        axis_aligned = min(line_angle, np.pi / 2 - line_angle) <= tolerance
        near_star = False
        if self.stars.size:
            c, s = np.cos(theta), np.sin(theta)
            sx, sy, sr = self.stars[:, 0], self.stars[:, 1], self.stars[:, 2]
            d = sx * c + sy * s - rho
            t = -sx * s + sy * c
            near = (
                (np.abs(d) <= 2 * fwhm + sr + 2)
                & (t >= res["t0"] - sr - 5)
                & (t <= res["t1"] + sr + 5)
            )
            # a saturated star: its binned peak is above the saturation-like level
            near_star = bool(np.any(near & (self.stars[:, 3] >= self.bleed_peak)))
            reach = np.maximum(np.abs(t - res["t0"]), np.abs(t - res["t1"]))
            # a spike is short for its star and fades away from it; a trail that
            # passes a bright star does not fade
            close = near & (reach <= self.spike_factor * np.maximum(sr, 3.0))
            for k in np.flatnonzero(close):
                if _fades_from(res, t[k]):
                    return "spike"
        # a bleed runs along a detector axis from a saturated star: a star, saturated
        # (invalid) pixels on the line, or a saturation-like brightness
        off_axis = min(line_angle, np.pi / 2 - line_angle)
        if off_axis <= max(tolerance, np.deg2rad(3.0)) and _along_edge(
            res, self.f.shape, 3 * fwhm + 3
        ):
            return "edge"  # a first or last column or row: a detector defect
        short = length <= 0.5 * max(self.f.shape)
        if (
            axis_aligned
            and short
            and (near_star or res["gaps"] >= 0.25 or res["amp"] >= self.bleed_peak)
        ):
            return "bleed"
        return None


def find_trails(
    image,
    valid=None,
    *,
    noise=None,
    min_snr=8.0,
    min_length=30.0,
    max_width=30.0,
    search_size=512,
    clip=4.0,
    star_peak=10.0,
    spike_factor=6.0,
    bleed_angle=1.5,
    bleed_peak=300.0,
    search_snr=6.0,
    short_snr=6.5,
    n_max=10,
):
    """
    Find straight linear features (satellite, aircraft and meteor trails).

    Parameters
    ----------
    image : 2-D `~numpy.ndarray`
        The frame in units of the sky noise with the background removed,
        for example ``(data - sky) / sigma``. A residual background
        gradient and a noise that is wrong by a constant factor are
        measured and removed again, block by block. A ``ScaledSNR`` (the
        S/N of a frame, made where it is used) takes 4 bytes a pixel less
        on a large frame than the S/N array.
    valid : 2-D bool `~numpy.ndarray`, optional
        True where a pixel can be used. NaN and inf pixels are always
        invalid.
    noise : float or 2-D `~numpy.ndarray`, optional
        If given, ``image`` is divided by it first.
    min_snr : float, optional
        The matched-filter S/N a trail must reach over its extent (and half
        of it with the median along the trail).
    min_length : float, optional
        The shortest trail reported, in pixels.
    max_width : float, optional
        The widest trail reported (FWHM across the line, pixels).
    search_size : int, optional
        The search runs on the image binned to at most this many pixels a
        side; the lines are then refined at full resolution.
    clip : float, optional
        Binned S/N values are clipped to ``[-clip, clip]`` in the search,
        so that no single source dominates a line.
    star_peak : float, optional
        Compact sources whose binned S/N peaks above this are stars: they
        are removed before the search, and a line that reaches less than
        ``spike_factor`` star radii from one is a diffraction spike.
    spike_factor : float, optional
        See ``star_peak``.
    bleed_angle : float, optional
        A line within this many degrees of a detector axis, shorter than
        half the frame, is a bleed column (saturation) and is not reported
        when it touches a star brighter than ``bleed_peak`` (binned S/N),
        has invalid (for example saturated) pixels on more than 10 % of its
        centre line, or itself peaks above ``bleed_peak``.
    bleed_peak : float, optional
        See ``bleed_angle``; in units of the sky noise.
    search_snr : float, optional
        Peaks of the line transform above this many of its own sigmas
        (measured angle by angle) are refined as candidates.
    short_snr : float or None, optional
        Short segments (16 to 64 rows or columns of the frame binned to
        about 1024 pixels a side, and of it binned twice more) whose sums
        reach this many of their own sigmas (measured slope by slope) are
        refined as candidates. None turns the short-segment search off.
    n_max : int, optional
        At most this many trails are reported.

    Returns
    -------
    trails : `~astropy.table.QTable`
        One row per trail, brightest first: end points ``x0, y0, x1, y1``
        (0-based pixels), ``theta`` (position angle of the line, degrees
        from +x towards +y, in [0, 180)), ``rho`` (signed distance of the
        line from pixel (0, 0), pixels, along the normal at ``theta + 90``
        degrees), ``fwhm`` (across the line, pixels), ``peak`` (S/N per
        pixel at the centre of the line), ``snr`` (matched-filter S/N over
        the extent), ``length`` (pixels) and ``method`` (``'segment'`` for a
        bright feature found by its shape, ``'hough'`` for one found by the
        line transform, ``'short'`` for one found by the short-segment
        search, and ``'head'`` for the saturated head of the trail in the
        row above it, wider than the trail: its band follows the head).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._trails import find_trails, trail_mask
    >>> rng = np.random.default_rng(0)
    >>> img = rng.normal(size=(256, 256)).astype(np.float32)
    >>> yy, xx = np.mgrid[:256, :256]
    >>> img += 3 * np.exp(-0.5 * ((yy - 0.5 * xx - 60) / 1.5) ** 2)
    >>> trails = find_trails(img)
    >>> len(trails), round(float(trails['theta'][0]))
    (1, 27)
    >>> trail_mask(img.shape, trails).sum() > 0
    np.True_
    """
    lazy = None
    if isinstance(image, ScaledSNR):
        big = image.data.size > _WHOLE_SNR_PIXELS and min(image.shape) >= 1024
        if big and noise is None and valid is None:
            lazy = image  # summed band by band, never whole
        else:
            valid = image.valid if valid is None else valid
            image = image[:, :]
    if lazy is not None:
        snr, shape = lazy, lazy.shape
    else:
        image = np.asarray(image)
        if image.ndim != 2:
            msg = f"image must be 2-D, got shape {image.shape}"
            raise ValueError(msg)
        shape = image.shape
        good = np.isfinite(image)
        if valid is not None:
            valid = np.asarray(valid, bool)
            if valid.shape != shape:
                msg = f"valid has shape {valid.shape}, image {shape}: they must match"
                raise ValueError(msg)
            good &= valid
        if image.dtype == np.float32 and not image[~good].any():
            snr = image  # already zero where not usable (the evaluator's S/N): no copy
        else:
            snr = np.where(good, image, 0).astype(np.float32, copy=False)
        if noise is not None:
            with np.errstate(all="ignore"):
                snr = np.where(good, snr / np.asarray(noise, np.float32), 0).astype(np.float32)
            good &= np.isfinite(snr)
            snr[~good] = 0

    b = max(1, int(np.ceil(max(shape) / search_size)))
    # the short-segment search bins to ~1024 pixels a side: its sums serve here too
    b0 = max(1, int(np.ceil(max(shape) / 1024)))
    sums = None
    if lazy is not None:
        good, block_sums = _summed_snr(lazy, sorted({b, b0}))
        sums = block_sums[b0]
    if good.sum() < 64 or min(shape) < 8:
        return _empty_table()
    if lazy is not None:
        z, frac = _bin(snr, good, b, sums if b % b0 == 0 else block_sums[b])
    else:
        if b0 > 1 and b % b0 == 0:
            sums = (_block_sums(snr, b0), _block_sums(good, b0), b0)
        z, frac = _bin(snr, good, b, sums)
    zgood = frac >= 0.5
    block = max(8, int(round(128 / b)))
    stats = _local_stats(z, zgood, block)
    if stats is None:
        return _empty_table()
    bgz, sdz, cellz = stats
    z = (z - _upsample(bgz, cellz, z.shape)) / _upsample(sdz, cellz, z.shape)
    z[~zgood] = 0
    z = z.astype(np.float32)

    # full-resolution background and noise: per pixel, from a subsample
    # (every other pixel, every fourth on frames binned by 8 or more)
    st = 4 if b >= 8 else 2
    pstats = _local_stats(snr[::st, ::st], good[::st, ::st], max(8, 128 // st))
    if pstats is None:
        return _empty_table()
    pbg, psd, pcell = pstats
    frame = _Frame(snr, good, pbg, psd, (st * pcell[0], st * pcell[1]))
    frame.sums = sums

    finder = _Finder(
        frame,
        min_snr=min_snr,
        min_length=min_length,
        max_width=max_width,
        clip=clip,
        spike_factor=spike_factor,
        bleed_angle=bleed_angle,
        bleed_peak=bleed_peak,
    )

    # segments: stars (compact, bright) out; elongated ones are candidates
    labels, seg = _segments(ndimage.uniform_filter(z, 2) if b == 1 else z, 4.0)
    candidates = []
    weights = np.clip(z, -clip, clip)
    if seg is not None:
        length_b = np.sqrt(12.0) * seg["major"]
        elong = seg["major"] / seg["minor"]
        is_line = (elong >= 3.0) & (length_b * b >= min_length) & (seg["area"] >= 3)
        is_star = ~is_line & (seg["peak"] >= star_peak)
        is_line[0] = is_star[0] = False
        star_ids = np.flatnonzero(is_star)
        if star_ids.size:
            # a star's segment within its equivalent radius: a trail merged with
            # a bright star sticks out of that disk and is kept
            in_star = np.isin(labels, star_ids)
            sy_, sx_ = np.nonzero(in_star)
            lab_s = labels[sy_, sx_]
            r_eq = np.sqrt(seg["area"] / np.pi) + 1.0
            far = np.hypot(sx_ - seg["x"][lab_s], sy_ - seg["y"][lab_s]) > r_eq[lab_s]
            in_star[sy_[far], sx_[far]] = False
            star_pix = ndimage.binary_dilation(in_star, _EIGHT, iterations=2)
            weights[star_pix] = 0
            frame.star_bin, frame.b = star_pix, b
            radius = np.sqrt(seg["area"][star_ids] / np.pi) * b
            finder.stars = np.column_stack(
                [
                    seg["x"][star_ids] * b + (b - 1) / 2,
                    seg["y"][star_ids] * b + (b - 1) / 2,
                    radius,
                    seg["peak"][star_ids],
                ]
            )
        for k in np.flatnonzero(is_line)[np.argsort(-seg["area"][is_line])]:
            a = seg["angle"][k]  # major axis from +x; the normal is at a + 90 deg
            theta = a + np.pi / 2
            cx, cy = seg["x"][k] * b + (b - 1) / 2, seg["y"][k] * b + (b - 1) / 2
            rho = cx * np.cos(theta) + cy * np.sin(theta)
            width = max(2 * seg["minor"][k] * b, 2.0)
            candidates.append((theta, rho, width, "segment", cx, cy))
    weights[~zgood] = 0
    # a high-pass over about 64 pixels: trails are thin, sky structure (the
    # Milky Way, a horizon, the edge of a cloud) is not
    box = max(9, int(round(64 / b)) | 1)
    weights -= ndimage.uniform_filter(weights, box, mode="nearest")
    weights[~zgood] = 0

    trails = []

    def accept(res, method):
        trails.append((finder.grow_ends(res), method))

    def process(theta, rho, width, method, near=None):
        half_band = min(max(6.0, 3 * width, 2.0 * b), 2 * max_width)
        res = finder.refine(theta, rho, width, half_band, near=near, coarse=max(1, b // 2))
        if res is None:
            return None, "lost"
        why = finder.judge(res)
        if why is None and method == "short" and res["amp"] < 1.0:
            # a short one fainter than 1 sigma per pixel cannot reach the S/N
            # that it has: wings of something bright, or blended faint stars
            why = "faint"
        # the same trail found twice
        for other, _ in trails:
            if _same_line(res, other):
                return res, "duplicate"
        if why is None:
            accept(res, method)
        return res, why

    # the largest elongated segments only: in a crowded field chains of
    # blended stars are many, and refining each at full resolution costs
    # tenths of a second (benchmarks/trails.py keeps its recall)
    for theta, rho, width, method, cx, cy in candidates[: n_max + 2]:
        if len(trails) >= n_max:
            break
        if any(_on_trail(np.array([cx]), np.array([cy]), other)[0] for other, _ in trails):
            continue  # a piece of a trail already found
        res, why = process(theta, rho, width, method)
        log.debug(
            "segment candidate: %s %s",
            why or "trail",
            ""
            if res is None
            else {
                k: round(res[k], 2)
                for k in ("snr", "evenness", "evenness8", "peakiness", "dips", "amp")
            },
        )

    # the line transform on the binned, star-cleaned, clipped S/N
    nyb, nxb = z.shape
    diag = np.hypot(nyb, nxb)
    n_theta = int(np.ceil(np.pi * diag / 2))
    thetas = np.linspace(0, np.pi, n_theta, endpoint=False)
    cos_t, sin_t = np.cos(thetas), np.sin(thetas)
    xc, yc = (nxb - 1) / 2, (nyb - 1) / 2
    n_rho = int(np.ceil(diag)) + 3
    rho_off = n_rho / 2
    keep = weights > 1.0
    for res, _ in trails:  # bright trails found by shape are out of the search
        keep &= ~_binned_band(res, z.shape, b)
    yk, xk = np.nonzero(keep)
    wk = weights[keep]
    acc = _hough(xk - xc, yk - yc, wk, cos_t, sin_t, n_rho, rho_off)
    # counts of valid binned pixels per line, on a coarser grid and every other angle
    counts = _line_counts(zgood, cos_t, sin_t, n_rho, rho_off, xc, yc)
    vals = np.where(zgood, np.where(weights > 1.0, weights, 0.0), 0.0)[zgood]
    noise = _line_noise(counts, float(vals.mean()), float(vals.var()))
    tried = 0
    row_scale = None
    misses = 0
    while len(trails) < n_max and tried < 2 * n_max + 5 and misses < 8:
        sig, row_scale = _significance(acc, noise, row_scale)
        k = int(np.argmax(sig))
        it, ir = divmod(k, n_rho)
        if not np.isfinite(sig[it, ir]) or sig[it, ir] < search_snr:
            break
        tried += 1
        theta = thetas[it]
        rho_b = ir - rho_off
        # binned line x_b cos + y_b sin = rho_b (centred) -> full resolution
        px_b, py_b = xc + rho_b * cos_t[it], yc + rho_b * sin_t[it]
        px, py = px_b * b + (b - 1) / 2, py_b * b + (b - 1) / 2
        rho = px * cos_t[it] + py * sin_t[it]
        res, why = process(theta, rho, max(1.5 * b, 2.0), "hough")
        misses = 0 if why is None else misses + 1
        log.debug(
            "hough candidate %.1f sigma: %s %s",
            sig[it, ir],
            why or "trail",
            ""
            if res is None
            else {
                k: round(res[k], 2)
                for k in ("snr", "median_snr", "evenness8", "peakiness", "amp", "sigma", "t0", "t1")
            },
        )
        # take what was looked at out of the accumulator, so the next peak is new:
        # the line tried, and the trail it led to
        tried_line = {
            "theta_used": theta,
            "rho_used": rho,
            "t0": -np.inf,
            "t1": np.inf,
            "sigma": max(1.5 * b, 2.0) / _FWHM_PER_SIGMA,
        }
        band = _binned_band(tried_line, z.shape, b)
        if res is not None and why in (None, "duplicate", "spike", "bleed", "wide"):
            band |= _binned_band(res, z.shape, b)
        band &= keep
        yk, xk = np.nonzero(band)
        acc -= _hough(xk - xc, yk - yc, weights[band], cos_t, sin_t, n_rho, rho_off)
        keep &= ~band

    if short_snr is not None and len(trails) < n_max:
        _short_search(frame, b, trails, process, clip=clip, threshold=short_snr, stars=finder.stars)
    return _to_table(trails)


def _short_search(frame, b, trails, process, *, clip, threshold, stars, n_refine=12):
    """Short and faint segments: a multi-scale segment search at fine binning.

    The line transform above runs on a frame binned to ~512 pixels, where a
    50-pixel trail is a few binned pixels long and its S/N is spread over the
    look-elsewhere noise of every long line. Here the frame is binned to
    ~1024 pixels, smoothed by about a trail's width, and segments spanning 16
    to 64 rows (or columns) of it, and of it binned twice more, are summed
    by a partial fast Radon transform; the most significant are refined.
    """
    snr, good, star_bin = frame.snr, frame.valid, frame.star_bin
    shape = snr.shape
    b0 = max(1, int(np.ceil(max(shape) / 1024)))
    z0, frac = _bin(snr, good, b0, getattr(frame, "sums", None))
    zgood = frac >= 0.5
    # the frame's own background and noise (a binned pixel's background is
    # sqrt(n) times a pixel's; the scale of each plane is measured below)
    cell = (frame.cell[0] / b0, frame.cell[1] / b0)
    z0 -= _upsample(frame.bg, cell, z0.shape) * np.sqrt(frac * b0**2)
    z0 /= _upsample(frame.noise, cell, z0.shape)
    np.clip(z0, -clip, clip, out=z0)
    z0[~zgood] = 0
    if star_bin is not None:
        iy = np.minimum((np.arange(z0.shape[0]) * b0 + b0 // 2) // b, star_bin.shape[0] - 1)
        ix = np.minimum((np.arange(z0.shape[1]) * b0 + b0 // 2) // b, star_bin.shape[1] - 1)
        z0[star_bin[iy[:, None], ix[None, :]]] = 0
    # a high-pass over ~25 pixels: galaxies, halos and sky structure are not thin
    z0 -= ndimage.uniform_filter(z0, 25, mode="nearest")
    # and the rim of invalid regions (the wings of saturated stars and bleeds,
    # the edge of a footprint) out
    z0[ndimage.binary_dilation(~zgood, _EIGHT, iterations=3)] = 0
    z0 = z0.astype(np.float32)
    # compact sources left by the coarse star removal (faint stars, knots) would
    # outshine a faint segment: round or small pieces of the smoothed S/N out
    zs = ndimage.gaussian_filter(z0, 1.0)
    q16, q50, q84 = np.percentile(zs[zgood][::7], [16, 50, 84])
    zs = (zs - q50) / max((q84 - q16) / 2, 1e-6)
    labels, seg = _segments(zs, 6.0)
    if seg is not None:
        compact = (seg["major"] < 2.0 * seg["minor"]) | (np.sqrt(12.0) * seg["major"] < 12)
        # (pieces of a faint trail are not peaked)
        compact &= seg["peak"] >= 8.0
        compact[0] = False
        out = ndimage.binary_dilation(compact[labels], _EIGHT, iterations=2)
        z0[out] = 0
    cands = []
    for scale in (1, 2):
        img = z0 if scale == 1 else _bin(z0, np.ones(z0.shape, bool), 2)[0]
        img = ndimage.gaussian_filter(img, 1.0)
        big = b0 * scale
        for z, xa, ya, xb, yb in _segment_candidates(
            img, kmin=4, kmax=6, threshold=threshold, n_best=32
        ):
            cands.append(
                (
                    z,
                    xa * big + (big - 1) / 2,
                    ya * big + (big - 1) / 2,
                    xb * big + (big - 1) / 2,
                    yb * big + (big - 1) / 2,
                    big,
                )
            )
    cands.sort(key=lambda r: -r[0])
    tried, looked = [], []
    bright = stars[stars[:, 3] >= 50.0] if stars.size else np.zeros((0, 4))
    n = 0
    for z, xa, ya, xb, yb, big in cands:
        if n >= n_refine:
            break
        mx, my = 0.5 * (xa + xb), 0.5 * (ya + yb)
        theta = np.arctan2(-(xb - xa), yb - ya)
        if any(_on_trail(np.array([mx]), np.array([my]), other)[0] for other, _ in trails):
            continue
        if bright.size and np.any(
            np.hypot(bright[:, 0] - mx, bright[:, 1] - my) <= 3 * bright[:, 2] + 8
        ):
            continue  # in the halo of a bright star: its rings and spikes
        if any(_on_trail(np.array([mx]), np.array([my]), other, extra=4)[0] for other in looked):
            continue  # on a line refined already (a galaxy, a chain of stars)
        if any(np.hypot(mx - x, my - y) <= 16 * big for _, _, x, y in tried):
            continue  # one refinement per place
        seg_len = np.hypot(xb - xa, yb - ya)
        theta, rho = _scan_line(frame, theta, mx, my, seg_len, 1.5 * big, clip)
        tried.append((theta, rho, mx, my))
        n += 1
        reach = 2 * np.hypot(xb - xa, yb - ya) + 32
        res, why = process(theta, rho, max(2.0, 1.5 * big), "short", near=(mx, my, reach))
        if res is not None and "theta_used" in res:
            looked.append(res)
        log.debug(
            "short candidate %.1f sigma at (%.0f, %.0f): %s %s",
            z,
            mx,
            my,
            why or "trail",
            ""
            if res is None
            else {
                k: round(res[k], 2)
                for k in ("snr", "median_snr", "amp", "sigma", "t0", "t1", "evenness")
            },
        )


def _frt_planes(img, kmin, kmax):
    """Partial fast Radon transform of the steep lines of ``img`` (Brady 1998).

    Lines rise by ``s = 0 .. h-1`` pixels in x over ``h = 2**k`` rows. Yields
    ``(k, planes)`` for ``k`` in ``[kmin, kmax]``: ``planes[j, s, x]`` is the sum
    along the digital line from ``(x, j h/2)`` to ``(x + s, j h/2 + h - 1)``, for
    every start row ``j h/2`` (strips overlapping by half, so a segment at least
    1.5 h rows long fills one of them). Each level costs one pass over the image.
    """
    ny, nx = img.shape
    top = 2**kmax
    nyp = int(np.ceil(ny / top)) * top
    nxp = nx + top
    pad = np.zeros((nyp, nxp), np.float32)
    pad[:ny, :nx] = img
    prev = pad[:, None, :]
    for k in range(1, kmax + 1):
        h = 2**k
        # from kmin on, every pair of neighbouring strips (sliding by half a strip)
        lower, upper = (prev[:-1], prev[1:]) if k >= kmin else (prev[0::2], prev[1::2])
        new = np.empty((lower.shape[0], h, nxp), np.float32)
        for s in range(h):
            a = s // 2
            sh = s - a
            if sh:
                np.add(lower[:, a, : nxp - sh], upper[:, a, sh:], out=new[:, s, : nxp - sh])
                new[:, s, nxp - sh :] = lower[:, a, nxp - sh :]
            else:
                np.add(lower[:, a], upper[:, a], out=new[:, s])
        if k >= kmin:
            yield k, new
            prev = new[0::2]
        else:
            prev = new


def _segment_candidates(img, *, kmin, kmax, threshold, n_best):
    """Short straight segments of ``img`` by the partial fast Radon transform.

    ``img`` is a (smoothed) S/N. The segment sums of every level, orientation
    and slope are put in units of their own robust scatter, so the threshold is
    a false-alarm level whatever the correlation of the noise. Returns rows
    ``(z, x0, y0, x1, y1)`` in ``img`` pixels, the most significant first, at
    most ``n_best`` per level and orientation.
    """
    ny, nx = img.shape
    out = []
    views = (
        (img, lambda c, r: (c, r)),
        (img[:, ::-1], lambda c, r: (nx - 1 - c, r)),
        (img.T, lambda c, r: (r, c)),
        (img.T[:, ::-1], lambda c, r: (r, ny - 1 - c)),
    )
    for view, back in views:
        vy, vx = view.shape
        if vy < 2**kmax or vx < 2**kmax:
            continue
        for k, planes in _frt_planes(np.ascontiguousarray(view), kmin, kmax):
            h = 2**k
            # rows of strips that lie inside the image, start columns with the
            # whole line inside
            m = min(planes.shape[0], max(1, (vy - h) // (h // 2) + 1))
            z = planes[:m, :, : vx - h + 1]
            q16, q50, q84 = np.percentile(z[:, :, ::13], [16, 50, 84], axis=(0, 2))
            scale = np.maximum((q84 - q16) / 2, 1e-6).astype(np.float32)
            # (the planes are not changed: the next level is built from them)
            cut = (q50 + threshold * scale).astype(np.float32)
            hit = z >= cut[None, :, None]
            # flat indices of the few hits: 4x faster than a 3-D np.nonzero
            jj, ss, xx = np.unravel_index(np.flatnonzero(hit), hit.shape)
            vals = (z[jj, ss, xx] - q50[ss]) / scale[ss]
            if vals.size > n_best:
                best = np.argpartition(vals, vals.size - n_best)[vals.size - n_best :]
                jj, ss, xx, vals = jj[best], ss[best], xx[best], vals[best]
            for j, s, x, v in zip(jj, ss, xx, vals, strict=True):
                y0 = j * (h // 2)
                xa, ya = back(x, y0)
                xb, yb = back(x + s, y0 + h - 1)
                out.append((float(v), xa, ya, xb, yb))
    out.sort(key=lambda r: -r[0])
    return out


def _scan_line(frame, theta, mx, my, length, width, clip):
    """The angle and offset that best fit a short candidate through ``(mx, my)``.

    The transform's slopes are coarse for short segments and a segment of the
    noise may tilt it: angles within a few of its steps and offsets within a
    few pixels are tried with a matched filter over twice its length.
    """
    step = 1.0 / max(length, 16.0)
    thetas = theta + step * np.arange(-4, 5)
    offsets = np.arange(-3.0, 3.5, 0.5)
    ds = np.arange(-10.0, 10.5, 0.5)
    ts = np.arange(-length, length + 1.0)
    sigma = max(width / _FWHM_PER_SIGMA, 0.6)
    best = (-np.inf, theta, 0.0)
    for th in thetas:
        c, s = np.cos(th), np.sin(th)
        r0 = mx * c + my * s
        t0 = -mx * s + my * c
        xs = (r0 + ds)[None, :] * c - (t0 + ts)[:, None] * s
        ys = (r0 + ds)[None, :] * s + (t0 + ts)[:, None] * c
        v = frame.sample(xs, ys)
        v = np.nan_to_num(np.clip(v, -clip, clip))
        # the matched filter of each offset (a row each), less half its typical
        # positive level, and the run with the largest sum of each row at once
        m = np.empty((offsets.size, ts.size))
        for k, off in enumerate(offsets):
            g = np.exp(-0.5 * ((ds - off) / sigma) ** 2)
            m[k] = v @ (g / np.sqrt(np.sum(g**2)))
        positive = nanmedian(np.where(m > 0, m, np.nan), axis=1)
        level = 0.5 * np.maximum(np.where(np.isnan(positive), 1.0, positive), 1.0)
        for k, (i, j) in enumerate(zip(*_kadane_rows(m - level[:, None]), strict=True)):
            score = m[k, i:j].sum() / np.sqrt(max(j - i, 1))
            if score > best[0]:
                best = (score, th, offsets[k])
    _, th, off = best
    return th, mx * np.cos(th) + my * np.sin(th) + off


def _window(theta, near):
    """Along-line limits ``(lo, hi)`` within ``reach`` of a point, or None."""
    if near is None:
        return None
    x, y, reach = near
    t = -x * np.sin(theta) + y * np.cos(theta)
    return t - reach, t + reach


def _on_trail(xs, ys, b, extra=0.0):
    """Which points ``(xs, ys)`` lie on the band of the refined line ``b``."""
    c, s = np.cos(b["theta_used"]), np.sin(b["theta_used"])
    d = np.abs(xs * c + ys * s - b["rho_used"])
    t = -xs * s + ys * c
    half = 1.5 * b["sigma"] * _FWHM_PER_SIGMA + 2 + extra
    return (d <= half) & (t >= b["t0"] - 5) & (t <= b["t1"] + 5)


def _along_edge(res, shape, margin):
    """Whether both end points lie within ``margin`` of the same frame edge."""
    ny, nx = shape
    xs, ys = np.array([res["x0"], res["x1"]]), np.array([res["y0"], res["y1"]])
    return bool(
        np.all(xs <= margin)
        or np.all(xs >= nx - 1 - margin)
        or np.all(ys <= margin)
        or np.all(ys >= ny - 1 - margin)
    )


def _fades_from(res, t_star, *, ratio=1.5):
    """Whether the matched signal of a line is brighter near ``t_star`` than far from it."""
    t, m = res["profile_t"], res["profile_m"]
    if t.size < 8:
        return True
    dist = np.abs(t - t_star)
    split = np.median(dist)
    near, far = m[dist <= split], m[dist > split]
    if near.size == 0 or far.size == 0:
        return True
    return float(np.median(near)) >= ratio * max(float(np.median(far)), 1e-6)


def _same_line(a, b):
    """Whether more than a third of trail ``a`` lies on trail ``b``."""
    f = np.linspace(0, 1, 41)
    xs = a["x0"] + f * (a["x1"] - a["x0"])
    ys = a["y0"] + f * (a["y1"] - a["y0"])
    return _on_trail(xs, ys, b, extra=1.5 * a["sigma"] * _FWHM_PER_SIGMA).mean() > 1 / 3


def _binned_band(res, zshape, b):
    """Binned pixels within the band of a (refined or tried) line."""
    nyb, nxb = zshape
    yy = (np.arange(nyb) * b + (b - 1) / 2)[:, None]
    xx = (np.arange(nxb) * b + (b - 1) / 2)[None, :]
    c, s = np.cos(res["theta_used"]), np.sin(res["theta_used"])
    d = np.abs(xx * c + yy * s - res["rho_used"])
    t = -xx * s + yy * c
    half = 3 * res["sigma"] * _FWHM_PER_SIGMA / 2 + 1.5 * b
    return (d <= half) & (t >= res["t0"] - 2 * b) & (t <= res["t1"] + 2 * b)


def _valid_at(valid, coords):
    """``valid`` at the pixel nearest each ``(y, x)`` of ``coords`` (the frame's edge
    beyond it), rounded as ``ndimage.map_coordinates(order=0, mode='nearest')`` does."""
    iy = np.floor(coords[0] + 0.5).astype(np.intp)
    ix = np.floor(coords[1] + 0.5).astype(np.intp)
    return _flat_take(valid, iy, ix)


def _flat_take(plane, iy, ix, b=1):
    """``plane[iy // b, ix // b]``, indices clipped to the plane (changed in
    place): one gather of flat indices, 2x faster than a 2-D fancy index."""
    ny, nx = plane.shape
    if b > 1:
        iy //= b
        ix //= b
    np.clip(iy, 0, ny - 1, out=iy)
    np.clip(ix, 0, nx - 1, out=ix)
    if not plane.flags.c_contiguous:
        return plane[iy, ix]  # (ravel would copy it)
    iy *= nx
    iy += ix
    return plane.ravel().take(iy)


# _line_counts of frames whose binned pixels are all valid: they depend on the
# geometry alone, which a survey's frames share (a few entries, read-only)
_ALL_VALID_COUNTS = {}


def _line_counts(zgood, cos_t, sin_t, n_rho, rho_off, xc, yc):
    """Number of valid binned pixels on each line (theta, rho)."""
    key = None
    if zgood.all():
        key = (zgood.shape, cos_t.tobytes(), sin_t.tobytes(), n_rho, rho_off, xc, yc)
        cached = _ALL_VALID_COUNTS.get(key)
        if cached is not None:
            return cached
    full = _count_lines(zgood, cos_t, sin_t, n_rho, rho_off, xc, yc)
    if key is not None:
        full.setflags(write=False)
        if len(_ALL_VALID_COUNTS) >= 4:
            _ALL_VALID_COUNTS.clear()
        _ALL_VALID_COUNTS[key] = full
    return full


def _count_lines(zgood, cos_t, sin_t, n_rho, rho_off, xc, yc):
    f = 4
    ny, nx = zgood.shape
    if ny < 2 * f or nx < 2 * f:
        f = 1
    cy, cx = ny // f, nx // f
    frac = zgood[: cy * f, : cx * f].reshape(cy, f, cx, f).mean(axis=(1, 3))
    rows = zgood[cy * f :, :].sum() + zgood[: cy * f, cx * f :].sum()
    yy, xx = np.nonzero(frac > 0)
    w = frac[yy, xx] * f**2  # pixels, spread over f rho bins below
    x = xx * f + (f - 1) / 2 - xc
    y = yy * f + (f - 1) / 2 - yc
    sub = np.arange(0, cos_t.size, 2)
    acc = _hough(x, y, w, cos_t[sub], sin_t[sub], n_rho, rho_off)
    if f > 1:
        acc = ndimage.uniform_filter1d(acc, f, axis=1, mode="constant")
    full = np.empty((cos_t.size, n_rho))
    full[sub] = acc
    odd = np.arange(1, cos_t.size, 2)
    nxt = np.minimum(odd + 1, sub[-1])
    full[odd] = 0.5 * (acc[(odd - 1) // 2] + full[nxt])
    del rows
    return full


def _line_noise(counts, mu, var):
    """The expected Hough sum of each line, its noise, and the lines with too
    few pixels to judge: what `_significance` divides by, made once."""
    with np.errstate(all="ignore"):
        return mu * counts, np.sqrt(var * np.maximum(counts, 1.0)), counts < 8


def _significance(acc, noise, row_scale=None):
    """Hough sums in units of their noise (`_line_noise`), normalised angle by angle.

    ``row_scale`` (the median and scatter of each angle) is measured once and
    reused after trails are taken out.
    """
    expected, scale, few = noise
    with np.errstate(all="ignore"):
        sig = (acc - expected) / scale
    sig[few] = 0
    # wide or straddling trails: a 3-bin sum across rho as well
    sig3 = ndimage.uniform_filter1d(sig, 3, axis=1, mode="constant")
    sig3 *= np.sqrt(3)
    np.maximum(sig, sig3, out=sig)
    # each angle's own scatter sets its unit: clumps of faint stars are not lines
    if row_scale is None:
        med = np.median(sig, axis=1, keepdims=True)
        mad = np.median(np.abs(sig - med), axis=1, keepdims=True) * 1.4826
        row_scale = med, np.maximum(mad, 1.0)
    sig -= row_scale[0]
    sig /= row_scale[1]
    return sig, row_scale


def _to_table(trails):
    t = _empty_table()
    if not trails:
        return t
    rows = sorted(trails, key=lambda r: -r[0]["snr"])
    cols = {name: [] for name in TRAIL_COLUMNS}

    def add(r, fwhm, peak, snr, method):
        pa = np.rad2deg(np.arctan2(r["y1"] - r["y0"], r["x1"] - r["x0"])) % 180.0
        # rho along the normal at pa + 90 degrees
        normal = np.deg2rad(pa + 90.0)
        mx, my = 0.5 * (r["x0"] + r["x1"]), 0.5 * (r["y0"] + r["y1"])
        for k in ("x0", "y0", "x1", "y1"):
            cols[k].append(r[k])
        cols["theta"].append(pa)
        cols["rho"].append(mx * np.cos(normal) + my * np.sin(normal))
        cols["fwhm"].append(fwhm)
        cols["peak"].append(peak)
        cols["snr"].append(snr)
        cols["length"].append(np.hypot(r["x1"] - r["x0"], r["y1"] - r["y0"]) + 1)
        cols["method"].append(method)

    for res, method in rows:
        add(res, res["sigma"] * _FWHM_PER_SIGMA, res["amp"], res["snr"], method)
        # a saturated head wider than the trail: the row after its trail
        for head in res.get("heads", ()):
            add(head, head["fwhm"], res["amp"], res["snr"], "head")
    return QTable(cols, names=TRAIL_COLUMNS)


def trail_mask(shape, trails, *, width_factor=1.5, pad=1.0, min_half_width=1.5, out=None):
    """
    Pixel mask of trails, following each one's width and end points.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the frame.
    trails : `~astropy.table.QTable`
        As returned by `find_trails` (columns ``x0, y0, x1, y1, fwhm``).
    width_factor : float, optional
        The mask reaches ``width_factor * fwhm + pad`` pixels on each side
        of the line (1.5 FWHM is where a Gaussian profile falls to 0.2 % of
        its peak).
    pad : float, optional
        Pixels added to the half-width and beyond each end point (with half
        a FWHM more there), for the error on the position of a faint trail.
    min_half_width : float, optional
        The smallest half-width before ``pad``, in pixels.
    out : 2-D bool `~numpy.ndarray`, optional
        A mask to OR the trails into.

    Returns
    -------
    mask : 2-D bool `~numpy.ndarray`
        True on the trails.
    """
    ny, nx = shape
    mask = np.zeros(shape, bool) if out is None else out
    for row in trails:
        x0, y0, x1, y1 = (float(row[k]) for k in ("x0", "y0", "x1", "y1"))
        half = max(width_factor * float(row["fwhm"]), min_half_width) + pad
        length = np.hypot(x1 - x0, y1 - y0)
        if length == 0:
            ux, uy = 1.0, 0.0
        else:
            ux, uy = (x1 - x0) / length, (y1 - y0) / length
        reach = half + pad + 0.5 * float(row["fwhm"])
        xa, xb = min(x0, x1) - reach, max(x0, x1) + reach
        ya, yb = min(y0, y1) - reach, max(y0, y1) + reach
        xs = slice(max(int(np.floor(xa)), 0), min(int(np.ceil(xb)) + 1, nx))
        ys = slice(max(int(np.floor(ya)), 0), min(int(np.ceil(yb)) + 1, ny))
        if xs.start >= xs.stop or ys.start >= ys.stop:
            continue
        yy = np.arange(ys.start, ys.stop, dtype=np.float32)[:, None] - np.float32(y0)
        xx = np.arange(xs.start, xs.stop, dtype=np.float32)[None, :] - np.float32(x0)
        t = xx * np.float32(ux) + yy * np.float32(uy)
        d = np.abs(yy * np.float32(ux) - xx * np.float32(uy))
        # the ends: the pad, and half a FWHM for the end points found a little
        # short of where a faint trail's signal drops into the noise
        end = pad + 0.5 * float(row["fwhm"])
        mask[ys, xs] |= (d <= half) & (t >= -end) & (t <= length + end)
    return mask
