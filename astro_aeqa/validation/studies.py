# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The paper's validation studies (Jia et al. 2024, Figs. 7, 9, 10 and 11).

Each function takes the per-star tables of `measure_frame` (one table per
frame) and returns ``(QTable, matplotlib.figure.Figure)``. Saturated,
blended and edge stars, and stars with NaN pixels in their aperture, are
left out: their errors say nothing about the background. A star that
clouds dim below its 1-sigma flux error stays in, with the magnitude of
its 1-sigma flux (``flux_floored``): its error is a lower bound. matplotlib is
imported inside the functions; the figures use the object-oriented API
(no pyplot state), so they are safe in scripts and servers.
"""

import numpy as np
from astropy import units as u
from astropy.table import QTable, vstack

__all__ = [
    "error_vs_score",
    "monotonic_rise",
    "masked_vs_unmasked",
    "mask_ratio_study",
    "light_curve_study",
]


def _as_list(tables):
    if hasattr(tables, "colnames"):
        return [tables]
    tables = list(tables)
    if not tables:
        msg = "tables is empty; give the per-star tables of measure_frame, one per frame"
        raise ValueError(msg)
    return tables


def _figure(n_axes=1, width=6.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4.0), layout="constrained")
    axes = [fig.add_subplot(1, n_axes, i + 1) for i in range(n_axes)]
    return fig, axes


def _star_key(table, key):
    if key is not None:
        return key
    return "source_id" if "source_id" in table.colnames else "catalog_index"


def _snr_values(tables, snr_of, key):
    """S/N used by the cut, one array per table.

    ``"star"``: the median S/N of each star over all the tables (a star is
    selected or not as a whole, by its typical S/N); ``"point"``: each point's
    own. A cloud lowers the S/N of the points under it, so a cut per point
    drops the contaminated points first and flattens every study. Tables
    without a star identifier column are cut per point.
    """
    snrs = [np.nan_to_num(np.asarray(t["snr"], float)) for t in tables]
    if snr_of not in ("star", "point"):
        msg = f"snr_of must be 'star' or 'point', got {snr_of!r}"
        raise ValueError(msg)
    if snr_of == "point" or any(_star_key(t, key) not in t.colnames for t in tables):
        return snrs  # no star identifier: each point is its own star
    ids = [np.asarray(t[_star_key(t, key)]) for t in tables]
    uniq, inverse = np.unique(np.concatenate(ids), return_inverse=True)
    allsnr = np.concatenate(snrs)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(uniq.size))
    med = np.array([np.median(g) for g in np.split(allsnr[order], starts[1:])])
    out, start = [], 0
    for t in tables:
        out.append(med[inverse[start : start + len(t)]])
        start += len(t)
    return out


def _stack(tables, snr_min, snr_of="star", key=None, snrs=None):
    tables = _as_list(tables)
    if snrs is None:
        snrs = _snr_values(tables, snr_of, key) if snr_min is not None else [None] * len(tables)
    rows = []
    for i, (t, snr) in enumerate(zip(tables, snrs, strict=True)):
        keep = ~np.asarray(t["saturated"], bool) & np.isfinite(
            np.asarray(t["error"].value if hasattr(t["error"], "unit") else t["error"], float)
        )
        if snr_min is not None:
            keep &= snr >= snr_min
        for col in ("blended", "edge", "nonfinite"):  # errors that say nothing about the sky
            if col in t.colnames:
                keep &= ~np.asarray(t[col], bool)
        sigma_col = next((c for c in ("mag_cal_err", "mag_inst_err") if c in t.colnames), None)
        sigma = (
            np.asarray(u.Quantity(t[sigma_col], u.mag).value)[keep]
            if sigma_col is not None
            else np.full(keep.sum(), np.nan)
        )
        sub = QTable(
            {
                "frame": np.full(keep.sum(), i),
                "score": np.asarray(t["score"], float)[keep],
                "error": np.asarray(u.Quantity(t["error"], u.mag).value)[keep],
                "sigma": sigma,
                "masked": np.asarray(t["masked"], bool)[keep],
            }
        )
        rows.append(sub)
    return vstack(rows) if len(rows) > 1 else rows[0]


def monotonic_rise(values, errors, *, alpha=0.05, min_rise_sigma=3.0):
    """
    Test whether a binned curve rises monotonically, within its errors.

    Contamination only adds photometric error, so the true error-against-
    score curve can be flat (where there is no contamination, at the noise
    floor) but must never fall. The test therefore asks two questions:

    1. **Never falls**: is the curve consistent with a non-decreasing one?
       The weighted isotonic (non-decreasing) regression ``f`` of the values
       (weights ``1 / errors**2``) is the non-decreasing curve closest to
       them, so ``chi2 = sum(((values - f) / errors)**2)`` is never larger
       than the chi-square about the true curve, which follows a chi-square
       law with ``len(values)`` degrees of freedom when the true curve is
       non-decreasing. ``p_never_falls = chi2.sf(chi2, len(values))`` is thus
       a conservative p-value; the curve falls significantly if it is below
       ``alpha``.
    2. **Rises**: the last bin is above the first by at least
       ``min_rise_sigma`` combined standard errors.

    The curve rises monotonically when both hold. The Spearman correlation of
    the binned curve is returned for information only: on a curve that is
    flat in its lower bins it measures the noise of the flat part.

    Parameters
    ----------
    values, errors : array-like
        The binned curve (for example the median ``|error|`` per score bin)
        and the standard error of each value (positive).
    alpha : float, optional
        Significance level of a fall.
    min_rise_sigma : float, optional
        Required rise from the first to the last bin, in combined standard
        errors.

    Returns
    -------
    result : dict
        ``monotonic`` (bool: both hold), ``never_falls``, ``rises``,
        ``chi2``, ``dof``, ``p_never_falls``, ``rise_sigma``,
        ``spearman_rho``, ``isotonic`` (the fitted curve, a list) and
        ``alpha``, ``min_rise_sigma``.

    Examples
    --------
    >>> from astro_aeqa.validation import monotonic_rise
    >>> monotonic_rise([0.010, 0.011, 0.010, 0.02, 0.08], [0.001] * 5)["monotonic"]
    True
    >>> monotonic_rise([0.010, 0.020, 0.010, 0.02, 0.08], [0.001] * 5)["monotonic"]
    False
    """
    from scipy.optimize import isotonic_regression
    from scipy.stats import chi2 as chi2_dist
    from scipy.stats import spearmanr

    y = np.asarray(values, float)
    e = np.asarray(errors, float)
    if y.ndim != 1 or y.shape != e.shape or y.size < 2:
        msg = (
            f"values and errors must be 1-D arrays of one length >= 2, got shapes {y.shape} "
            f"and {e.shape}"
        )
        raise ValueError(msg)
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(e)) and np.all(e > 0)):
        msg = "values must be finite and errors finite and > 0; drop empty bins first"
        raise ValueError(msg)
    iso = isotonic_regression(y, weights=1.0 / e**2, increasing=True).x
    chi2 = float(np.sum(((y - iso) / e) ** 2))
    p = float(chi2_dist.sf(chi2, y.size))
    rise = float((y[-1] - y[0]) / np.hypot(e[-1], e[0]))
    rho = float(spearmanr(np.arange(y.size), y)[0]) if np.ptp(y) > 0 else 0.0
    never_falls = p >= alpha
    rises = rise >= min_rise_sigma
    return {
        "monotonic": bool(never_falls and rises),
        "never_falls": bool(never_falls),
        "rises": bool(rises),
        "chi2": chi2,
        "dof": int(y.size),
        "p_never_falls": p,
        "rise_sigma": rise,
        "spearman_rho": rho,
        "isotonic": [float(v) for v in iso],
        "alpha": float(alpha),
        "min_rise_sigma": float(min_rise_sigma),
    }


def _bootstrap_errors(frame, which, err, n_bins, n_boot, seed, min_frames=10):
    """Standard errors of the per-bin median and mean, resampling whole frames.

    The stars of one frame share its zero point and its clouds, so they are
    not independent; resampling frames (not stars) keeps that correlation.
    With fewer than ``min_frames`` frames the stars themselves are resampled.
    """
    rng = np.random.default_rng(seed)
    frames = np.unique(frame)
    if frames.size < min_frames:
        frame, frames = np.arange(err.size), np.arange(err.size)
    members = [np.flatnonzero(frame == f) for f in frames]
    meds = np.full((n_boot, n_bins), np.nan)
    means = np.full((n_boot, n_bins), np.nan)
    for k in range(n_boot):
        idx = np.concatenate([members[j] for j in rng.integers(0, frames.size, frames.size)])
        w, e = which[idx], err[idx]
        for b in range(n_bins):
            eb = e[w == b]
            if eb.size:
                meds[k, b] = np.median(eb)
                means[k, b] = np.mean(eb)
    enough = np.isfinite(meds).sum(axis=0) >= 2
    se_med, se_mean = np.full(n_bins, np.nan), np.full(n_bins, np.nan)
    se_med[enough] = np.nanstd(meds[:, enough], axis=0, ddof=1)
    se_mean[enough] = np.nanstd(means[:, enough], axis=0, ddof=1)
    return se_med, se_mean


def error_vs_score(
    tables,
    *,
    n_bins=8,
    bins=None,
    snr_min=5.0,
    snr_of="star",
    key=None,
    n_boot=200,
    seed=0,
    alpha=0.05,
    min_rise_sigma=3.0,
):
    """
    Photometric error against patch score: binned mean and median of ``|error|`` (Fig. 7).

    Each bin also gives ``|error| / sigma``, the error in units of the
    star's expected error ``mag_cal_err`` (photon, sky and read noise
    scaled by the slope of the calibration, with the zero-point error;
    ``mag_inst_err`` in older tables), which is 0.67 for pure
    noise whatever the S/N. Standard errors come from a bootstrap over
    frames (over stars when there are fewer than 10 frames). Whether the
    median rises monotonically is decided by ``monotonic_rise``.

    Parameters
    ----------
    tables : `~astropy.table.QTable` or list of them
        Per-star tables of `measure_frame` with a ``score`` column.
    n_bins : int, optional
        Number of score bins of equal star counts (quantiles).
    bins : array-like or None, optional
        Explicit score bin edges instead.
    snr_min : float or None, optional
        Stars below this S/N are left out. Photon noise must be well below
        the contamination signal to be measured: at S/N 100 it is 0.011 mag.
    snr_of : {"star", "point"}, optional
        Cut on each star's median S/N over all the tables (``"star"``, the
        default: clouds lower the S/N of the points they cover, so a cut per
        point would drop the contaminated points), or on each point's own.
        Stars are identified by ``key``; with one table both are the same.
    key : str or None, optional
        Star identifier column; default ``source_id`` if present, else
        ``catalog_index``.
    n_boot : int, optional
        Bootstrap resamplings of the frames for the standard errors.
    seed : int, optional
        Seed of the bootstrap.
    alpha, min_rise_sigma : float, optional
        Passed to ``monotonic_rise``.

    Returns
    -------
    table : `~astropy.table.QTable`
        ``score_lo``, ``score_hi``, ``score_mid`` (median score in the bin),
        ``n_stars``, ``mean_abs_error``, ``mean_abs_error_err``,
        ``median_abs_error``, ``median_abs_error_err`` (mag) and
        ``median_abs_error_over_sigma``. ``meta['monotonic']`` is the
        verdict of ``monotonic_rise`` on the median and
        ``meta['monotonic_test']`` its details; ``meta['monotonic_mean']``
        the verdict on the mean; ``meta['strictly_increasing']`` whether
        every bin's median is above the previous one, noise or not.
    fig : `~matplotlib.figure.Figure`
    """
    tables = _as_list(tables)
    stars = _stack(tables, snr_min, snr_of, key)
    score = np.asarray(stars["score"], float)
    err = np.abs(np.asarray(stars["error"], float))
    ok = np.isfinite(score) & np.isfinite(err)
    if ok.sum() < 2:
        msg = (
            "error_vs_score needs stars with a score: pass score_map= to measure_frame "
            "(the tables have no finite 'score')"
        )
        raise ValueError(msg)
    score, err = score[ok], err[ok]
    sigma = np.asarray(stars["sigma"], float)[ok]
    frame = np.asarray(stars["frame"])[ok]
    edges = (
        np.unique(np.quantile(score, np.linspace(0, 1, n_bins + 1)))
        if bins is None
        else np.asarray(bins, float)
    )
    n_edges = len(edges) - 1
    which = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, n_edges - 1)
    se_med, se_mean = _bootstrap_errors(frame, which, err, n_edges, n_boot, seed)
    rows = []
    for b in range(n_edges):
        sel = which == b
        if not sel.any():
            continue
        e = err[sel]
        rows.append(
            (
                edges[b],
                edges[b + 1],
                np.median(score[sel]),
                int(sel.sum()),
                np.mean(e),
                se_mean[b],
                np.median(e),
                se_med[b],
                np.median(e / sigma[sel]),
            )
        )
    out = QTable(
        rows=rows,
        names=(
            "score_lo",
            "score_hi",
            "score_mid",
            "n_stars",
            "mean_abs_error",
            "mean_abs_error_err",
            "median_abs_error",
            "median_abs_error_err",
            "median_abs_error_over_sigma",
        ),
    )
    for col in ("mean_abs_error", "mean_abs_error_err", "median_abs_error", "median_abs_error_err"):
        out[col].unit = u.mag
    med = out["median_abs_error"].value
    out.meta["strictly_increasing"] = bool(np.all(np.diff(med) > 0))
    for name, col in (("monotonic", "median_abs_error"), ("monotonic_mean", "mean_abs_error")):
        errs = out[f"{col}_err"].value
        test = None
        if len(out) >= 2 and np.all(np.isfinite(errs) & (errs > 0)):
            test = monotonic_rise(out[col].value, errs, alpha=alpha, min_rise_sigma=min_rise_sigma)
        out.meta[name] = bool(test["monotonic"]) if test else False
        if name == "monotonic":
            out.meta["monotonic_test"] = test
    out.meta["snr_min"] = snr_min
    out.meta["snr_of"] = snr_of
    fig, (ax,) = _figure()
    ax.scatter(score, err, s=2, alpha=0.25, color="0.6", label="stars")
    ax.errorbar(
        out["score_mid"],
        out["mean_abs_error"].value,
        yerr=out["mean_abs_error_err"].value,
        fmt="k-o",
        label="mean",
    )
    ax.errorbar(
        out["score_mid"],
        out["median_abs_error"].value,
        yerr=out["median_abs_error_err"].value,
        fmt="r:s",
        label="median",
    )
    ax.set_xlabel("patch score")
    ax.set_ylabel("|photometric error| (mag)")
    ax.set_yscale("log")
    positive = err[err > 0]
    if positive.size:
        ax.set_ylim(bottom=10 ** np.floor(np.log10(max(np.percentile(positive, 2), 1e-5))))
    ax.legend()
    return out, fig


def masked_vs_unmasked(tables, *, snr_min=5.0, frame_scores=None, snr_of="star", key=None):
    """
    Median ``|error|`` of masked and unmasked stars, per frame, against the frame score (Fig. 9).

    Parameters
    ----------
    tables : list of `~astropy.table.QTable`
        Per-star tables of `measure_frame`, one per frame.
    snr_min : float or None, optional
        Stars below this S/N are left out.
    frame_scores : array-like or None, optional
        One score per frame; default ``meta['frame_score']`` of each table
        (the mean patch score), else the frame's mask ratio.
    snr_of, key : optional
        As in `error_vs_score`.

    Returns
    -------
    table : `~astropy.table.QTable`
        ``frame``, ``frame_score``, ``mask_ratio``, ``n_masked``,
        ``n_unmasked``, ``median_abs_error_masked``,
        ``median_abs_error_unmasked`` (mag; NaN when a group is empty).
        ``meta['ratio']`` is the ratio of the overall medians.
    fig : `~matplotlib.figure.Figure`
    """
    tables = _as_list(tables)
    snrs = _snr_values(tables, snr_of, key)
    rows = []
    all_m, all_u = [], []
    for i, t in enumerate(tables):
        s = _stack(t, snr_min, snrs=[snrs[i]])
        err = np.abs(np.asarray(s["error"], float))
        m = np.asarray(s["masked"], bool)
        fs = frame_scores[i] if frame_scores is not None else t.meta.get("frame_score", np.nan)
        if not np.isfinite(fs):
            fs = t.meta.get("mask_ratio", np.nan)
        rows.append(
            (
                t.meta.get("frame", str(i)),
                fs,
                t.meta.get("mask_ratio", np.nan),
                int(m.sum()),
                int((~m).sum()),
                np.median(err[m]) if m.any() else np.nan,
                np.median(err[~m]) if (~m).any() else np.nan,
            )
        )
        all_m.append(err[m])
        all_u.append(err[~m])
    out = QTable(
        rows=rows,
        names=(
            "frame",
            "frame_score",
            "mask_ratio",
            "n_masked",
            "n_unmasked",
            "median_abs_error_masked",
            "median_abs_error_unmasked",
        ),
    )
    for col in ("median_abs_error_masked", "median_abs_error_unmasked"):
        out[col].unit = u.mag
    em, eu = np.concatenate(all_m), np.concatenate(all_u)
    out.meta["median_abs_error_masked"] = float(np.median(em)) if em.size else np.nan
    out.meta["median_abs_error_unmasked"] = float(np.median(eu)) if eu.size else np.nan
    out.meta["ratio"] = out.meta["median_abs_error_masked"] / out.meta["median_abs_error_unmasked"]
    fig, (ax,) = _figure()
    ax.scatter(
        out["frame_score"],
        out["median_abs_error_masked"].value,
        color="C3",
        marker="x",
        label="masked stars",
    )
    ax.scatter(
        out["frame_score"],
        out["median_abs_error_unmasked"].value,
        color="C0",
        marker="o",
        s=12,
        label="unmasked stars",
    )
    ax.set_xlabel("frame score")
    ax.set_ylabel("median |photometric error| (mag)")
    ax.set_yscale("log")
    ax.legend()
    return out, fig


def mask_ratio_study(
    tables, *, ratio_bins=(0.0, 0.05, 0.15, 0.3, 1.0), snr_min=5.0, snr_of="star", key=None
):
    """
    Mask ratio per frame, and the photometric error of frames grouped by mask ratio (Fig. 10).

    Parameters
    ----------
    tables : list of `~astropy.table.QTable`
        Per-star tables of `measure_frame`; ``meta['mask_ratio']`` is used.
    ratio_bins : sequence of float, optional
        Mask-ratio group edges.
    snr_min : float or None, optional
        Stars below this S/N are left out.
    snr_of, key : optional
        As in `error_vs_score`.

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per group: ``ratio_lo``, ``ratio_hi``, ``n_frames``,
        ``median_abs_error`` (all stars of the frames) and
        ``median_abs_error_unmasked`` (mag). ``meta['per_frame']`` holds
        ``(mask_ratio, median_abs_error)`` per frame.
    fig : `~matplotlib.figure.Figure`
    """
    tables = _as_list(tables)
    edges = np.asarray(ratio_bins, float)
    snrs = _snr_values(tables, snr_of, key)
    ratios, errs, errs_u = [], [], []
    for t, snr in zip(tables, snrs, strict=True):
        s = _stack(t, snr_min, snrs=[snr])
        err = np.abs(np.asarray(s["error"], float))
        m = np.asarray(s["masked"], bool)
        ratios.append(float(t.meta.get("mask_ratio", 0.0)))
        errs.append(err)
        errs_u.append(err[~m])
    ratios = np.asarray(ratios)
    which = np.clip(np.searchsorted(edges, ratios, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        sel = np.flatnonzero(which == b)
        e = np.concatenate([errs[i] for i in sel]) if sel.size else np.zeros(0)
        eu = np.concatenate([errs_u[i] for i in sel]) if sel.size else np.zeros(0)
        rows.append(
            (
                edges[b],
                edges[b + 1],
                int(sel.size),
                np.median(e) if e.size else np.nan,
                np.median(eu) if eu.size else np.nan,
            )
        )
    out = QTable(
        rows=rows,
        names=("ratio_lo", "ratio_hi", "n_frames", "median_abs_error", "median_abs_error_unmasked"),
    )
    out["median_abs_error"].unit = u.mag
    out["median_abs_error_unmasked"].unit = u.mag
    per_frame = [float(np.median(e)) if e.size else np.nan for e in errs]
    out.meta["per_frame"] = list(zip(ratios.tolist(), per_frame, strict=True))
    fig, (ax1, ax2) = _figure(2, width=9.0)
    ax1.plot(np.arange(len(ratios)), 100 * ratios, "k.-")
    ax1.set_xlabel("frame")
    ax1.set_ylabel("mask ratio (%)")
    labels = [f"{100 * lo:g}-{100 * hi:g}%" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    xpos = np.arange(len(out))
    ax2.bar(
        xpos - 0.2, np.nan_to_num(out["median_abs_error"].value), 0.4, label="all stars", color="C3"
    )
    ax2.bar(
        xpos + 0.2,
        np.nan_to_num(out["median_abs_error_unmasked"].value),
        0.4,
        label="unmasked stars",
        color="C0",
    )
    ax2.set_xticks(xpos, labels)
    ax2.set_xlabel("mask ratio of the frame")
    ax2.set_ylabel("median |photometric error| (mag)")
    ax2.legend()
    return out, fig


def light_curve_study(
    tables, *, n_stars=None, min_frames=5, snr_min=5.0, snr_of="star", key=None, n_plot=4
):
    """
    Light curves of reference stars over a sequence, masked against unmasked (Fig. 11).

    The deviation of a star in a frame is its calibrated magnitude minus
    its own median over the frames where it is not masked (over all frames
    if it is masked in fewer than 3 clean ones). The improvement of a star
    is the mean ``|deviation|`` of its masked points minus that of its
    unmasked points: the error that masking removes from its light curve.
    ``meta['mean_improvement']`` is its mean over the reference stars that
    have masked points. This is our reading of the paper's "average
    improvement of 0.51 magnitudes" (Sect. 3.3, Fig. 11: reference stars of
    sufficient S/N in a region first clear, later under passing clouds,
    split into masked and unmasked points). It grows with the thickness of
    the clouds that the mask catches, so it is a property of the data as
    much as of the mask.

    Reference stars are chosen as a whole, by their median S/N over the
    sequence (``snr_of="star"``): a per-point S/N cut would drop the points
    that clouds dim most, which are the ones masking must remove.

    Parameters
    ----------
    tables : list of `~astropy.table.QTable`
        Per-star tables of `measure_frame`, one per frame in time order.
    n_stars : int or None, optional
        Keep only the ``n_stars`` brightest reference stars.
    min_frames : int, optional
        A star must be measured in at least this many frames.
    snr_min : float or None, optional
        Stars (or points, with ``snr_of="point"``) below this S/N are left out.
    snr_of : {"star", "point"}, optional
        As in `error_vs_score`.
    key : str or None, optional
        Star identifier column; default ``source_id`` if present, else ``catalog_index``.
    n_plot : int, optional
        Number of light curves drawn (the stars most often masked).

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per star: ``star``, ``mag_cat``, ``n_frames``, ``n_masked``,
        ``rms_all``, ``rms_unmasked`` (mag, deviations from the median) and
        ``mean_abs_dev_masked``, ``mean_abs_dev_unmasked``, ``improvement``
        (mag). ``meta['mean_improvement']`` is the mean improvement over
        the stars with masked points and ``meta['rms_reduction']`` the mean
        ``rms_all - rms_unmasked``.
    fig : `~matplotlib.figure.Figure`
    """
    tables = _as_list(tables)
    if key is None:
        key = "source_id" if "source_id" in tables[0].colnames else "catalog_index"
    snrs = _snr_values(tables, snr_of, key)
    ids, frames, mags, masked, cats = [], [], [], [], []
    for i, (t, snr) in enumerate(zip(tables, snrs, strict=True)):
        ok = np.isfinite(np.asarray(u.Quantity(t["mag_cal"], u.mag).value)) & ~np.asarray(
            t["saturated"], bool
        )
        for col in ("blended", "edge", "nonfinite"):
            if col in t.colnames:
                ok &= ~np.asarray(t[col], bool)
        if snr_min is not None:
            ok &= snr >= snr_min
        ids.append(np.asarray(t[key])[ok])
        frames.append(np.full(ok.sum(), i))
        mags.append(u.Quantity(t["mag_cal"], u.mag).value[ok])
        masked.append(np.asarray(t["masked"], bool)[ok])
        cats.append(u.Quantity(t["mag_cat"], u.mag).value[ok])
    ids, frames, mags = np.concatenate(ids), np.concatenate(frames), np.concatenate(mags)
    masked, cats = np.concatenate(masked), np.concatenate(cats)
    uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    rows, curves = [], {}
    for j, star in enumerate(uniq):
        if counts[j] < min_frames:
            continue
        sel = inverse == j
        m, mk = mags[sel], masked[sel]
        ref = np.median(m[~mk]) if (~mk).sum() >= 3 else np.median(m)
        dev = m - ref
        absd = np.abs(dev)
        rms_all = float(np.sqrt(np.mean(dev**2)))
        rms_u = float(np.sqrt(np.mean(dev[~mk] ** 2))) if (~mk).any() else np.nan
        mad_m = float(np.mean(absd[mk])) if mk.any() else np.nan
        mad_u = float(np.mean(absd[~mk])) if (~mk).any() else np.nan
        rows.append(
            (
                star,
                float(np.median(cats[sel])),
                int(sel.sum()),
                int(mk.sum()),
                rms_all,
                rms_u,
                mad_m,
                mad_u,
                mad_m - mad_u,
            )
        )
        curves[star] = (frames[sel], dev, mk)
    if not rows:
        msg = f"no star is measured in min_frames={min_frames} frames; lower min_frames or snr_min"
        raise ValueError(msg)
    out = QTable(
        rows=rows,
        names=(
            "star",
            "mag_cat",
            "n_frames",
            "n_masked",
            "rms_all",
            "rms_unmasked",
            "mean_abs_dev_masked",
            "mean_abs_dev_unmasked",
            "improvement",
        ),
    )
    if n_stars is not None:
        out.sort("mag_cat")
        out = out[:n_stars]
    for col in (
        "mag_cat",
        "rms_all",
        "rms_unmasked",
        "mean_abs_dev_masked",
        "mean_abs_dev_unmasked",
        "improvement",
    ):
        out[col].unit = u.mag
    has = out["n_masked"] > 0
    imp = out["improvement"].value[has]
    out.meta["mean_improvement"] = float(np.nanmean(imp)) if np.isfinite(imp).any() else np.nan
    out.meta["n_stars_masked"] = int(has.sum())
    red = (out["rms_all"] - out["rms_unmasked"]).value[has]
    out.meta["rms_reduction"] = float(np.nanmean(red)) if np.isfinite(red).any() else np.nan
    fig, (ax,) = _figure(width=8.0)
    order = np.argsort(-np.asarray(out["n_masked"]))[:n_plot]
    for k, idx in enumerate(order):
        fr, dev, mk = curves[out["star"][idx]]
        offset = 0.5 * k
        ax.plot(fr, dev + offset, "-", color="0.7", lw=0.8)
        ax.plot(
            fr[~mk], dev[~mk] + offset, "o", color="C0", ms=3, label="unmasked" if k == 0 else None
        )
        ax.plot(fr[mk], dev[mk] + offset, "x", color="C3", ms=4, label="masked" if k == 0 else None)
    ax.invert_yaxis()
    ax.set_xlabel("frame")
    ax.set_ylabel("magnitude - median (mag, offset per star)")
    ax.legend()
    return out, fig
