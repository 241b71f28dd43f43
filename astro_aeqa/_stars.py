# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Stars of a frame: the PSF FWHM, the patch size it calls for, and the
footprints of bright, well-modelled stars.

* `find_stars` detects compact sources (segments and moments as photutils
  defines them) and says which look like a well-modelled star: round,
  with the frame's FWHM.
* `measure_fwhm` fits the FWHM of isolated bright stars (photutils
  ``fit_fwhm``); `auto_patch_size` turns it into a patch size.
* `bright_star_mask` marks the pixels of bright, well-modelled stars. A
  patch whose high score comes from such pixels alone is a star the network
  reconstructs imperfectly, not a defect: the evaluator's
  ``star_aware=True`` scores patches without these pixels.

This module sits in the preprocessing layer: numpy, scipy, astropy and
photutils only.
"""

import warnings

import numpy as np
from astropy.table import QTable

from ._preprocessing import sky_statistics
from ._tiling import patch_grid_shape
from .exceptions import InputDataError

__all__ = [
    "find_stars",
    "measure_fwhm",
    "auto_patch_size",
    "bright_star_mask",
    "psf_shape_map",
]

# Moffat power index used to size a star's footprint (the simulator's and a
# typical seeing-limited PSF's); the footprint reaches where the star falls
# to one sigma of the sky noise.
_FOOTPRINT_BETA = 2.5


_COLUMNS = ("x", "y", "peak_snr", "fwhm", "elongation")
_BLOCK = 16  # pixels; the side of the blocks whose peaks seed the windows
_EIGHT = np.ones((3, 3), bool)  # 8-connectivity, as detect_sources
# windows are labelled together on canvases of about this many pixels (about
# 17 bytes each while labelled): a frame full of stars takes several
_CANVAS_PIXELS = 2**22
# a segment larger than this is no star: the sky of a frame far from the
# level it is judged against (a bright Moon against the camera's clear sky).
# It is left out before its pixels are gathered, so such a frame costs one
# pass, not ~100 bytes a pixel and seconds of moments
_MAX_SOURCE_PIXELS = 2**20


def find_stars(
    data, valid=None, *, stats=None, threshold=5.0, n_pixels=5, fwhm=None, min_peak=None
):
    """
    Detect compact sources and tell which look like well-modelled stars.

    A source is an 8-connected group of at least ``n_pixels`` pixels above
    ``threshold`` sky sigmas, as photutils
    `~photutils.segmentation.detect_sources` finds them, and its shape comes
    from the intensity-weighted second moments of those pixels, with the
    definitions of photutils `~photutils.segmentation.SourceCatalog`
    (``fwhm``, ``elongation``). Only windows around the pixels bright enough
    to matter are segmented, and the moments of all the windows' segments
    are computed at once with NumPy. The sources are those of photutils on
    the whole frame to 1e-8; alone it takes about as long, but inside
    ``evaluate``, where the stars are found on a thread beside the network,
    4096x4096 star fields are scored 4-16 % faster with it
    (``benchmarks/find_stars.py``).

    Parameters
    ----------
    data : 2-D `~numpy.ndarray`
        The frame (not background subtracted).
    valid : 2-D bool `~numpy.ndarray`, optional
        Usable pixels (True); they set the sky statistics when ``stats`` is
        not given. Saturated cores stay in: a saturated star is a star.
    stats : ``astro_aeqa._preprocessing.SkyStatistics``, optional
        Sky level and noise; measured when not given.
    threshold : float, optional
        Detection threshold in sky-noise units.
    n_pixels : int, optional
        Fewest connected pixels of a detection.
    fwhm : float, optional
        Expected PSF FWHM in pixels (for example of the reference frames);
        default the median FWHM of the frame's bright round sources.
    min_peak : float, optional
        Only catalogue sources whose peak reaches this many sky sigmas.
        Their segments (hence shapes) are those of the full detection; the
        faint ones are just not searched for, which is much faster.

    Returns
    -------
    stars : `~astropy.table.QTable`
        ``x``, ``y``, ``peak_snr`` (peak over the sky noise), ``fwhm``
        (pixels, from the segment's second moments), ``elongation`` and
        ``star`` (True for a round source of the expected FWHM:
        elongation < 1.3 and FWHM within 0.6-1.6 times ``fwhm``).
        ``meta['fwhm']`` is the expected FWHM used.

    Notes
    -----
    A segment of more than 2**20 pixels is no source: it is the sky of a
    frame judged against a level far below its own (a bright Moon against
    a camera's clear sky), and is left out before it is measured.
    """
    data = np.asarray(data, dtype=np.float32)
    if valid is None:
        valid = np.isfinite(data)
    if stats is None:
        stats = sky_statistics(data, valid)
    level, noise = np.float32(stats.level), np.float32(stats.noise)

    def snr(window, out=None):
        # a window at a time (into ``out``, a window of a canvas): no
        # full-frame copy of a large frame
        y0, y1, x0, x1 = window
        out = np.subtract(data[y0:y1, x0:x1], level, out=out)
        out /= noise
        out[~np.isfinite(out)] = 0.0
        return out

    def block_peaks(y0, y1):
        # the S/N is monotonic in the data: the peak of the data is the
        # peak of the S/N, without making it, except where the data hold
        # NaN or +inf (the peak is then not finite) or -inf (counted as 0,
        # which matters only in a block below the sky)
        peaks = (_block_max(data[y0:y1], _BLOCK) - level) / noise
        redo = ~((peaks >= 0) & (peaks < np.inf))
        if redo.any():
            peaks = np.where(redo, _block_max(snr((y0, y1, 0, data.shape[1])), _BLOCK), peaks)
        return peaks

    seed = threshold if min_peak is None else max(float(min_peak), threshold)
    rows = _segment_sources(snr, block_peaks, data.shape, threshold, n_pixels, seed)
    # a source that two windows both reached is kept once (its peak pixel)
    _, first = np.unique(rows[:, -1], return_index=True)
    rows = rows[np.sort(first)]
    table = QTable({name: rows[:, i] for i, name in enumerate(_COLUMNS)})
    return _flag_stars(table, fwhm, threshold)


def _flag_stars(table, fwhm, threshold):
    """Add the ``star`` column (round, of the PSF's width) and ``meta['fwhm']``.

    Without ``fwhm`` it is the median of the bright round sources, whose
    moments the detection threshold does not cut short.
    """
    round_ = table["elongation"] < 1.3
    if fwhm is None:
        bright = round_ & (table["peak_snr"] > 20 * threshold)
        fwhm = float(np.median(table["fwhm"][bright])) if bright.any() else np.nan
    table["star"] = round_ & (table["fwhm"] > 0.6 * fwhm) & (table["fwhm"] < 1.6 * fwhm)
    table.meta["fwhm"] = float(fwhm)
    return table


def _segment_sources(snr, block_peaks, shape, threshold, n_pixels, seed):
    """Rows of `_COLUMNS` plus the peak pixel's flat index for every source.

    ``snr(window, out=None)`` returns (or writes into ``out``) the
    signal-to-noise image of a window ``(y0, y1, x0, x1)`` of a frame of
    ``shape``; ``block_peaks(y0, y1)`` the peak S/N of each `_BLOCK` block
    of the rows ``y0:y1``.

    The frame is segmented in windows around the blocks whose peak reaches
    ``seed``, with a block of margin: the 5-sigma isophote of all but the
    brightest stars ends within 16 px of the peak. A window where a source
    touches an inner edge may cut it short: all such windows double in size,
    merge where they meet, and are segmented again.
    """
    from scipy import ndimage

    ny, nx = shape
    band = 16 * _BLOCK
    peaks = np.concatenate([block_peaks(y, min(ny, y + band)) for y in range(0, ny, band)])
    if seed <= threshold:  # every detection is wanted: one window, the frame
        todo = np.ones_like(peaks, dtype=bool)
    else:
        todo = ndimage.binary_dilation(peaks >= seed, structure=_EIGHT)
    rows = [np.zeros((0, len(_COLUMNS) + 1))]
    while todo.any():
        groups, _ = ndimage.label(todo, structure=_EIGHT)
        todo = np.zeros_like(todo)
        objects = ndimage.find_objects(groups)
        windows = [(ys.start * _BLOCK, min(ny, ys.stop * _BLOCK),
                    xs.start * _BLOCK, min(nx, xs.stop * _BLOCK)) for ys, xs in objects]  # fmt: skip
        found, cut_short = _measure_windows(snr, shape, windows, threshold, n_pixels, seed)
        rows.append(found)
        for ys, xs in (objects[i] for i in np.flatnonzero(cut_short)):
            hy, hx = ys.stop - ys.start, xs.stop - xs.start
            todo[max(0, ys.start - hy) : ys.stop + hy, max(0, xs.start - hx) : xs.stop + hx] = True
    return np.concatenate(rows)


def _block_max(image, block):
    """The maximum of each ``block x block`` block (partial ones at the far edges)."""
    ny, nx = image.shape
    nby, nbx = -(-ny // block), -(-nx // block)
    if (ny, nx) != (nby * block, nbx * block):
        pad = ((0, nby * block - ny), (0, nbx * block - nx))
        image = np.pad(image, pad, constant_values=-np.inf)
    # columns first: elementwise maxima of whole rows (vectorised), ten times
    # faster than reducing runs of ``block`` values; then within each row
    cols = image.reshape(nby, block, nbx * block).max(axis=1)
    return cols.reshape(nby, nbx, block).max(axis=2)


def _pack(heights, widths, width):
    """Shelf-pack rectangles one pixel apart: their origins and the canvas shape."""
    origins = np.zeros((len(heights), 2), dtype=np.intp)
    y = x = shelf = 0
    for i in np.argsort(-heights, kind="stable"):  # tallest first: little waste
        if x and x + widths[i] > width:
            y, x, shelf = y + shelf + 1, 0, 0
        origins[i] = y, x
        x += widths[i] + 1
        shelf = max(shelf, heights[i])
    return origins, (y + shelf, width)


def _measure_windows(snr, shape, windows, threshold, n_pixels, seed):
    """The complete sources of windows, in window order, and which windows cut one short.

    The windows are packed one pixel apart on canvases of at most
    ``_CANVAS_PIXELS``, each labelled in one call: thousands of small
    windows cost one pass of NumPy, not thousands. A window larger than a
    canvas (the merged windows of a crowded field) is labelled in strips of
    rows, so the memory stays bounded on a frame full of stars.
    """
    win = np.asarray(windows, dtype=np.intp).reshape(-1, 4)
    area = (win[:, 1] - win[:, 0]) * (win[:, 3] - win[:, 2])
    # consecutive runs of windows of about _CANVAS_PIXELS each, a large one alone
    batch = np.cumsum(area) // _CANVAS_PIXELS
    large = area > _CANVAS_PIXELS
    starts = np.flatnonzero(np.r_[True, batch[1:] != batch[:-1]] | large | np.r_[False, large[:-1]])
    found, cut_short = [], []
    for a, b in zip(starts, np.r_[starts[1:], len(win)], strict=True):
        if b - a == 1 and area[a] > _CANVAS_PIXELS:
            labelled = _label_in_strips(snr, shape, win[a], threshold)
        else:
            labelled = _label_canvas(snr, shape, win[a:b], threshold)
        f, c = _measure_labels(shape, win[a:b], n_pixels, seed, *labelled)
        found.append(f)
        cut_short.append(c)
    return np.concatenate(found), np.concatenate(cut_short)


def _label_canvas(snr, shape, win, threshold):
    """The windows ``win`` (rows ``y0, y1, x0, x1``) packed on one canvas and labelled.

    Returns the labelled pixels (flat indices on the canvas, in raster
    order), their labels and S/N values, the number of labels, the canvas
    width, each window's origin on it, the window of each labelled pixel and
    the labels that touch a window edge inside the frame.
    """
    from scipy import ndimage

    ny, nx = shape
    heights, widths = win[:, 1] - win[:, 0], win[:, 3] - win[:, 2]
    origins, (height, width) = _pack(heights, widths, max(int(widths.max()), min(nx, 2048)))
    canvas = np.zeros((height, width), np.float32)
    owner = np.full((height, width), -1, np.int32)
    inner_edge = np.zeros((height, width), bool)  # window edges inside the frame
    for i, ((y0, y1, x0, x1), (cy, cx), h, w) in enumerate(
        zip(win, origins, heights, widths, strict=True)
    ):
        snr((y0, y1, x0, x1), out=canvas[cy : cy + h, cx : cx + w])
        owner[cy : cy + h, cx : cx + w] = i
        inner_edge[cy, cx : cx + w] |= y0 > 0
        inner_edge[cy + h - 1, cx : cx + w] |= y1 < ny
        inner_edge[cy : cy + h, cx] |= x0 > 0
        inner_edge[cy : cy + h, cx + w - 1] |= x1 < nx
    above = canvas > threshold
    labels, n = ndimage.label(above, structure=_EIGHT)
    giants = _giant_labels(labels, n)
    if giants.size:
        above &= ~np.isin(labels, giants)
    flat = labels.ravel()
    pix = np.flatnonzero(above)  # the labelled pixels (4x faster on bools than on labels)
    lab, values = flat[pix], canvas.ravel()[pix]
    edge_labels = flat[inner_edge.ravel()]
    return pix, lab, values, n, width, origins, owner.ravel()[pix], edge_labels


def _label_in_strips(snr, shape, window, threshold):
    """`_label_canvas` of one large window, labelled in strips of rows.

    Each strip is labelled alone; labels that touch across a strip boundary
    (8-connected) are joined, and the joined labels numbered in raster
    order of their first pixel, as `scipy.ndimage.label` numbers them: the
    same labels as the whole window's, with one strip in memory at a time.
    """
    from scipy import ndimage
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ny, nx = shape
    y0, y1, x0, x1 = (int(v) for v in window)
    h, w = y1 - y0, x1 - x0
    rows = max(2, _CANVAS_PIXELS // w)
    strip = np.empty((min(rows, h), w), np.float32)
    pix, lab, values, joins, edge, dropped = [], [], [], [], [], []
    offset, last = 0, None  # labels so far; the previous strip's last row

    def unique(v, offset):
        """Labels ``v`` of a strip made unique across the strips (a new array:
        a view would keep every strip's labels alive to the end)."""
        return np.where(v > 0, v + offset, 0)

    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        s = snr((y0 + r0, y0 + r1, x0, x1), out=strip[: r1 - r0])
        above = s > threshold
        labels, n = ndimage.label(above, structure=_EIGHT)
        giants = _giant_labels(labels, n)
        if giants.size:  # not gathered; still joined, so their components go too
            dropped.append(giants + offset)
            above &= ~np.isin(labels, giants)
        flat = np.flatnonzero(above)
        pix.append(flat + r0 * w)
        lab.append(labels.ravel()[flat] + offset)
        values.append(s.ravel()[flat])
        first = unique(labels[0], offset)
        if last is not None:
            for a, b in ((last, first), (last[:-1], first[1:]), (last[1:], first[:-1])):
                touch = (a > 0) & (b > 0)
                joins.append((a[touch], b[touch]))
        last = unique(labels[-1], offset)
        if r0 == 0 and y0 > 0:
            edge.append(first)
        if x0 > 0:
            edge.append(unique(labels[:, 0], offset))
        if x1 < nx:
            edge.append(unique(labels[:, -1], offset))
        offset += n
    if y1 < ny:
        edge.append(last)
    pix, lab, values = np.concatenate(pix), np.concatenate(lab), np.concatenate(values)
    a, b = (np.concatenate(v) for v in zip(*joins, strict=True)) if joins else ((), ())
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(offset + 1, offset + 1))
    _, component = connected_components(graph, directed=False)
    if dropped:  # the components of giants: not sources
        part_of_giant = np.isin(component[lab], component[np.concatenate(dropped)])
        pix, lab, values = pix[~part_of_giant], lab[~part_of_giant], values[~part_of_giant]
    # number the components by their first pixel (pix is in raster order)
    comp = component[lab]
    # each component's first pixel, in component order (np.unique's
    # return_index without its sort of every pixel)
    n_components = component.max() + 1
    first_of = np.full(n_components, len(comp), np.intp)
    np.minimum.at(first_of, comp, np.arange(len(comp)))
    first = first_of[first_of < len(comp)]
    order = np.argsort(first, kind="stable")
    number = np.zeros(n_components, np.intp)
    number[comp[first[order]]] = np.arange(1, len(first) + 1)
    relabel = number[component]
    relabel[0] = 0
    edge_labels = relabel[np.concatenate(edge)] if edge else np.zeros(0, np.intp)
    owner = np.zeros(len(pix), np.int32)
    return pix, relabel[lab], values, len(first), w, np.zeros((1, 2), np.intp), owner, edge_labels


def _giant_labels(labels, n):
    """The labels (of ``n``) with more than `_MAX_SOURCE_PIXELS` pixels."""
    # none can be that large unless the labelled pixels are: a count, not a bincount
    if labels.size <= _MAX_SOURCE_PIXELS or np.count_nonzero(labels) <= _MAX_SOURCE_PIXELS:
        return np.zeros(0, np.intp)
    return np.flatnonzero(np.bincount(labels.ravel(), minlength=n + 1)[1:] > _MAX_SOURCE_PIXELS) + 1


def _measure_labels(
    shape, win, n_pixels, seed, pix, lab, values, n, width, origins, owner, edge_labels
):
    """The complete sources of labelled windows (`_label_canvas`) and which
    windows cut one short."""
    ny, nx = shape
    size = np.bincount(lab, minlength=n + 1)
    peak = np.full(n + 1, -np.inf, dtype=np.float32)
    np.maximum.at(peak, lab, values)
    keep = (size >= n_pixels) & (peak >= seed)
    keep[0] = False
    edge = np.zeros(n + 1, bool)
    edge[edge_labels] = True
    window_of = np.zeros(n + 1, np.intp)
    window_of[lab] = owner
    cut_short = np.zeros(len(win), bool)
    cut_short[window_of[keep & edge]] = True
    keep &= ~edge
    wanted = np.flatnonzero(keep)
    if wanted.size == 0:
        return np.zeros((0, len(_COLUMNS) + 1)), cut_short
    wanted = wanted[np.argsort(window_of[wanted], kind="stable")]  # window order, then scan order
    sel = keep[lab]
    pix, lab, w, wi = pix[sel], lab[sel], values[sel].astype(np.float64), owner[sel]
    cy, cx = np.divmod(pix, width)
    iy, ix = cy - origins[wi, 0], cx - origins[wi, 1]  # within the window, as photutils sees it

    def weighted_sum(v):
        return np.bincount(lab, weights=w * v, minlength=n + 1)[wanted]

    total = weighted_sum(1.0)
    xc, yc = weighted_sum(ix) / total, weighted_sum(iy) / total
    cxx = weighted_sum(ix * ix.astype(float)) / total - xc**2
    cyy = weighted_sum(iy * iy.astype(float)) / total - yc**2
    cxy = weighted_sum(ix * iy.astype(float)) / total - xc * yc
    # SourceCatalog's guard for sources one pixel thin: widen by a pixel's variance
    thin = cxx * cyy - cxy**2 < (1.0 / 12) ** 2
    cxx, cyy = cxx + thin / 12.0, cyy + thin / 12.0
    half_trace, root = (cxx + cyy) / 2, np.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)
    major, minor = half_trace + root, np.maximum(half_trace - root, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        elongation = np.sqrt(major / minor)
    fwhm = 2.0 * np.sqrt(np.log(2.0) * (major + minor))
    # the peak pixel names the source when two windows reach it
    at_peak = w == peak[lab]
    gy, gx = iy + win[wi, 0], ix + win[wi, 2]
    peak_pixel = np.full(n + 1, np.iinfo(np.int64).max)
    np.minimum.at(peak_pixel, lab[at_peak], gy[at_peak] * nx + gx[at_peak])
    origin = win[window_of[wanted]]
    found = np.column_stack(
        [xc + origin[:, 2], yc + origin[:, 0], peak[wanted], fwhm, elongation, peak_pixel[wanted]]
    )
    return found, cut_short


def measure_fwhm(data, valid=None, *, stats=None, n_max=40):
    """
    Return the median PSF FWHM (pixels) of isolated, bright, unsaturated stars.

    A circular Gaussian is fitted to each of up to ``n_max`` of the brightest
    round sources (photutils `~photutils.psf.fit_fwhm`).

    Parameters
    ----------
    data : 2-D `~numpy.ndarray`
        The frame.
    valid : 2-D bool `~numpy.ndarray`, optional
        Usable pixels (saturated and masked pixels excluded).
    stats : ``astro_aeqa._preprocessing.SkyStatistics``, optional
        Sky level and noise; measured when not given.
    n_max : int, optional
        Most stars fitted.

    Returns
    -------
    fwhm : float
        Pixels.

    Raises
    ------
    astro_aeqa.exceptions.InputDataError
        If the frame holds no isolated bright star to measure.

    Examples
    --------
    >>> from astropy import units as u
    >>> from astro_aeqa.simulation import PAPER_2P5M, simulate_image
    >>> from astro_aeqa._stars import measure_fwhm
    >>> sim = simulate_image(shape=(256, 256), fwhm=0.9 * u.arcsec, psf="gaussian", seed=1)
    >>> round(measure_fwhm(sim.ccd.data) / sim.ccd.meta["FWHMPIX"], 1)
    1.0
    """
    from photutils.psf import fit_fwhm
    from scipy.spatial import cKDTree

    data = np.asarray(data, dtype=np.float32)
    if valid is None:
        valid = np.isfinite(data)
    if stats is None:
        stats = sky_statistics(data, valid)
    found = find_stars(data, valid, stats=stats, threshold=10.0)
    ny, nx = data.shape
    guess = found.meta["fwhm"]
    if not np.isfinite(guess):
        guess = 3.0
    half = max(3, int(np.ceil(1.5 * guess)))
    xy = np.column_stack([found["x"], found["y"]])
    if len(found) > 1:
        dist, _ = cKDTree(xy).query(xy, k=2)
        isolated = dist[:, 1] > 4 * half
    else:
        isolated = np.ones(len(found), bool)
    inside = (
        (found["x"] > half) & (found["x"] < nx - 1 - half)
        & (found["y"] > half) & (found["y"] < ny - 1 - half)
    )  # fmt: skip
    good = np.flatnonzero(
        isolated & inside & (found["elongation"] < 1.3) & (found["peak_snr"] > 30)
    )
    if good.size == 0:
        msg = (
            "no isolated bright star to measure the PSF FWHM on; give the FWHM (or an "
            "explicit patch_size) instead"
        )
        raise InputDataError(msg)
    good = good[np.argsort(-found["peak_snr"][good])[:n_max]]
    sub = np.where(valid, data - np.float32(stats.level), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fit warnings of a poor star are judged below
        fwhms = np.asarray(fit_fwhm(sub, xypos=xy[good], fwhm=guess, fit_shape=2 * half + 1), float)
    fwhms = fwhms[np.isfinite(fwhms) & (fwhms > 0.5)]
    if fwhms.size == 0:
        msg = "the PSF FWHM fit failed on every star; give an explicit patch_size instead"
        raise InputDataError(msg)
    return float(np.median(fwhms))


def auto_patch_size(fwhm, *, factor=20.0, minimum=32, maximum=128, multiple=8):
    """
    Return a patch size for a PSF FWHM: ``factor * fwhm`` rounded up.

    The paper asks for at least twice the FWHM (never less here). The
    quality benchmark (``benchmarks/quality.py``) measured patch AUROC and
    mask IoU from 5 to 60 times the FWHM fitted by `measure_fwhm`: both
    rise up to about 20 times and are flat or fall beyond, for both
    simulated cameras, hence ``factor=20``. The result is rounded up to a
    multiple of ``multiple`` and clipped to ``[minimum, maximum]``.

    Examples
    --------
    >>> from astro_aeqa._stars import auto_patch_size
    >>> auto_patch_size(3.1), auto_patch_size(2.1), auto_patch_size(1.0), auto_patch_size(20.0)
    (64, 48, 32, 128)
    """
    fwhm = float(fwhm)
    if not np.isfinite(fwhm) or fwhm <= 0:
        msg = f"fwhm must be a positive number of pixels, got {fwhm}"
        raise ValueError(msg)
    size = int(np.ceil(max(factor, 2.0) * fwhm / multiple) * multiple)
    return int(min(max(size, minimum), maximum))


def bright_star_mask(
    data,
    valid=None,
    *,
    stats=None,
    fwhm=None,
    min_snr=50.0,
    catalog_xy=None,
    match_radius=None,
    found=None,
):
    """
    Return the pixels of bright, well-modelled stars.

    A star counts when it is detected with a peak of at least ``min_snr``
    sky sigmas, is round and has the expected FWHM (see `find_stars`) and,
    when ``catalog_xy`` is given, lies within ``match_radius`` of a
    catalogue position. Its footprint is a disc out to where a Moffat
    (beta = 2.5) profile of its peak falls to one sky sigma, at least
    1.5 FWHM. Trails, doubled or smeared stars and defocus donuts are not
    round stars of the expected FWHM, so they are never covered.

    Parameters
    ----------
    data : 2-D `~numpy.ndarray`
        The frame.
    valid : 2-D bool `~numpy.ndarray`, optional
        Usable pixels.
    stats : ``astro_aeqa._preprocessing.SkyStatistics``, optional
        Sky level and noise.
    fwhm : float, optional
        Expected FWHM in pixels (the reference frames'); default the
        frame's own.
    min_snr : float, optional
        Least peak signal-to-noise of a bright star.
    catalog_xy : array-like of shape (n, 2), optional
        Pixel positions of catalogue stars.
    match_radius : float, optional
        Pixels; default one FWHM.
    found : `~astropy.table.QTable`, optional
        A `find_stars` catalogue of the frame that holds every source down
        to ``min_snr``, to reuse instead of detecting again.

    Returns
    -------
    mask : 2-D bool `~numpy.ndarray`
        True on bright-star pixels.
    stars : `~astropy.table.QTable`
        The bright stars used (``x``, ``y``, ``peak_snr``, ``radius``);
        ``meta['found']`` holds every detection (`find_stars`).
    """
    data = np.asarray(data)
    # only the bright sources are measured: with fwhm=None the frame's FWHM
    # comes from sources above 100 sigma, which are among them
    if found is None:
        found = find_stars(data, valid, stats=stats, fwhm=fwhm, min_peak=min(min_snr, 100.0))
    use = np.asarray(found["star"], bool) & (np.asarray(found["peak_snr"]) >= min_snr)
    fwhm = found.meta["fwhm"]
    if catalog_xy is not None and use.any():
        from scipy.spatial import cKDTree

        cxy = np.asarray(catalog_xy, float).reshape(-1, 2)
        radius = fwhm if match_radius is None else float(match_radius)
        if cxy.size:
            dist, _ = cKDTree(cxy).query(np.column_stack([found["x"], found["y"]]))
            use &= dist <= radius
        else:
            use[:] = False
    bright = found[use]
    bright.meta["found"] = found
    mask = np.zeros(data.shape, bool)
    if len(bright) == 0 or not np.isfinite(fwhm):
        bright["radius"] = np.zeros(len(bright))
        return mask, bright
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / _FOOTPRINT_BETA) - 1.0))
    peak = np.asarray(bright["peak_snr"], float)
    radii = np.maximum(1.5 * fwhm, alpha * np.sqrt(peak ** (1.0 / _FOOTPRINT_BETA) - 1.0))
    bright["radius"] = radii
    ny, nx = data.shape
    for x, y, r in zip(bright["x"], bright["y"], radii, strict=True):
        y0, y1 = max(0, int(y - r)), min(ny, int(y + r) + 2)
        x0, x1 = max(0, int(x - r)), min(nx, int(x + r) + 2)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    return mask, bright


def psf_shape_map(stars, shape, patch_size, fwhm, *, min_snr=20.0, reach=2, per_patch=32):
    """
    Return, per patch, how much broader or more elongated than the reference PSF its sources are.

    Each source of ``stars`` with a peak of at least ``min_snr`` sky sigmas
    gets ``log(fwhm_i / fwhm) + log(elongation_i)``: about 0 for a round star
    of the reference FWHM, more for a smeared, doubled or defocused star or
    worse seeing. A patch takes the median over the sources within ``reach``
    patches of it (a block of ``2 * reach + 1`` patches a side): PSF defects
    (focus, tracking, tilt, wind shake) change smoothly over a frame, and
    one faint star's moments are noisy. ``benchmarks/quality.py`` picked
    ``min_snr=20, reach=2``. The autoencoder scores smeared and defocused
    stars at chance, because a blurred star is easy to reconstruct; this
    is what makes the evaluator's ``psf_term`` see them.

    Parameters
    ----------
    stars : `~astropy.table.QTable`
        Output of `find_stars` (``x``, ``y``, ``peak_snr``, ``fwhm``,
        ``elongation``), with every source down to ``min_snr``.
    shape : tuple of int
        Image shape ``(ny, nx)``.
    patch_size : int
        Patch side in pixels.
    fwhm : float
        Reference FWHM in pixels (the reference frames', `measure_fwhm`).
    min_snr : float, optional
        Least peak signal-to-noise of a source that counts.
    reach : int, optional
        Patches around each patch whose sources count.
    per_patch : int, optional
        At most this many sources of a patch count, the brightest (their
        moments are the best measured; this bounds the work in crowded
        fields).

    Returns
    -------
    shape_map : 2-D `~numpy.ndarray`
        ``(n_py, n_px)`` float64; NaN where no source is within reach.

    Examples
    --------
    >>> from astropy.table import QTable
    >>> from astro_aeqa._stars import psf_shape_map
    >>> t = QTable({"x": [5.0, 6.0, 40.0], "y": [5.0, 6.0, 5.0], "peak_snr": [50.0, 60.0, 50.0],
    ...             "fwhm": [2.0, 2.0, 4.0], "elongation": [1.0, 1.0, 1.0]})
    >>> psf_shape_map(t, (16, 64), 16, 2.0, reach=0).round(3).tolist()
    [[0.0, nan, 0.693, nan]]
    """
    n_py, n_px = patch_grid_shape(shape, patch_size)
    peak = np.asarray(stars["peak_snr"], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.log(np.asarray(stars["fwhm"], float) / float(fwhm)) + np.log(
            np.asarray(stars["elongation"], float)
        )
    use = (peak >= min_snr) & np.isfinite(value)
    order = np.argsort(-peak[use], kind="stable")  # the brightest first in each patch
    value = value[use][order]
    iy = np.clip(np.asarray(stars["y"], float)[use][order] // patch_size, 0, n_py - 1).astype(int)
    ix = np.clip(np.asarray(stars["x"], float)[use][order] // patch_size, 0, n_px - 1).astype(int)
    cell = iy * n_px + ix
    # each source's rank among its patch's, to lay them out as (n_py, n_px, k)
    by_cell = np.argsort(cell, kind="stable")
    starts = np.searchsorted(cell[by_cell], cell[by_cell])
    rank = np.empty(cell.size, int)
    rank[by_cell] = np.arange(cell.size) - starts
    keep = rank < per_patch
    k = int(rank[keep].max()) + 1 if keep.any() else 1
    grid = np.full((n_py + 2 * reach, n_px + 2 * reach, k), np.nan)
    grid[iy[keep] + reach, ix[keep] + reach, rank[keep]] = value[keep]
    side = 2 * reach + 1
    around = np.concatenate(
        [grid[dy : dy + n_py, dx : dx + n_px] for dy in range(side) for dx in range(side)],
        axis=-1,
    )
    around.sort(axis=-1)  # NaN last
    n = np.isfinite(around).sum(axis=-1)
    lo = np.take_along_axis(around, np.maximum(n - 1, 0)[..., None] // 2, axis=-1)[..., 0]
    hi = np.take_along_axis(around, (n // 2)[..., None], axis=-1)[..., 0]
    return np.where(n > 0, (lo + hi) / 2, np.nan)
