# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The paper's validation studies (Jia et al. 2024, Figs. 7, 9, 10 and 11).

Each function takes the per-star tables of `measure_frame` (one table per
frame) and returns ``(QTable, matplotlib.figure.Figure)``. Saturated,
blended and edge stars are left out: their errors say nothing about the
background. matplotlib is
imported inside the functions; the figures use the object-oriented API
(no pyplot state), so they are safe in scripts and servers.
"""

import numpy as np
from astropy import units as u
from astropy.table import QTable, vstack

__all__ = ["error_vs_score", "masked_vs_unmasked", "mask_ratio_study", "light_curve_study"]


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


def _stack(tables, snr_min):
    rows = []
    for i, t in enumerate(_as_list(tables)):
        keep = ~np.asarray(t["saturated"], bool) & np.isfinite(
            np.asarray(t["error"].value if hasattr(t["error"], "unit") else t["error"], float)
        )
        if snr_min is not None:
            keep &= np.nan_to_num(np.asarray(t["snr"], float)) >= snr_min
        for col in ("blended", "edge"):  # errors that say nothing about the background
            if col in t.colnames:
                keep &= ~np.asarray(t[col], bool)
        sub = QTable(
            {
                "frame": np.full(keep.sum(), i),
                "score": np.asarray(t["score"], float)[keep],
                "error": np.asarray(u.Quantity(t["error"], u.mag).value)[keep],
                "masked": np.asarray(t["masked"], bool)[keep],
            }
        )
        rows.append(sub)
    return vstack(rows) if len(rows) > 1 else rows[0]


def error_vs_score(tables, *, n_bins=8, bins=None, snr_min=5.0):
    """
    Photometric error against patch score: binned mean and median of ``|error|`` (Fig. 7).

    Parameters
    ----------
    tables : `~astropy.table.QTable` or list of them
        Per-star tables of `measure_frame` with a ``score`` column.
    n_bins : int, optional
        Number of score bins of equal star counts (quantiles).
    bins : array-like or None, optional
        Explicit score bin edges instead.
    snr_min : float or None, optional
        Stars below this S/N are left out.

    Returns
    -------
    table : `~astropy.table.QTable`
        ``score_lo``, ``score_hi``, ``score_mid`` (median score in the bin),
        ``n_stars``, ``mean_abs_error``, ``median_abs_error`` and
        ``median_abs_error_err`` (its standard error; mag). ``meta['monotonic']``
        says whether the median rises from bin to bin, and
        ``meta['monotonic_within_errors']`` whether every drop is within the
        combined standard errors.
    fig : `~matplotlib.figure.Figure`
    """
    stars = _stack(tables, snr_min)
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
    edges = (
        np.unique(np.quantile(score, np.linspace(0, 1, n_bins + 1)))
        if bins is None
        else np.asarray(bins, float)
    )
    which = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        sel = which == b
        if not sel.any():
            continue
        e = err[sel]
        # standard error of the median, sqrt(pi/2) sigma / sqrt(n), with a robust sigma
        sem = 1.2533 * 1.4826 * np.median(np.abs(e - np.median(e))) / np.sqrt(e.size)
        rows.append(
            (
                edges[b],
                edges[b + 1],
                np.median(score[sel]),
                int(sel.sum()),
                np.mean(e),
                np.median(e),
                sem,
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
            "median_abs_error",
            "median_abs_error_err",
        ),
    )
    for col in ("mean_abs_error", "median_abs_error", "median_abs_error_err"):
        out[col].unit = u.mag
    med = out["median_abs_error"].value
    tol = np.hypot(out["median_abs_error_err"].value[1:], out["median_abs_error_err"].value[:-1])
    out.meta["monotonic"] = bool(np.all(np.diff(med) >= 0))
    out.meta["monotonic_within_errors"] = bool(np.all(np.diff(med) >= -tol))
    fig, (ax,) = _figure()
    ax.scatter(score, err, s=2, alpha=0.25, color="0.6", label="stars")
    ax.plot(out["score_mid"], out["mean_abs_error"].value, "k-o", label="mean")
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


def masked_vs_unmasked(tables, *, snr_min=5.0, frame_scores=None):
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
    rows = []
    all_m, all_u = [], []
    for i, t in enumerate(tables):
        s = _stack(t, snr_min)
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


def mask_ratio_study(tables, *, ratio_bins=(0.0, 0.05, 0.15, 0.3, 1.0), snr_min=5.0):
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
    ratios, errs, errs_u = [], [], []
    for t in tables:
        s = _stack(t, snr_min)
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


def light_curve_study(tables, *, n_stars=None, min_frames=5, snr_min=5.0, key=None, n_plot=4):
    """
    Light curves of reference stars over a sequence, masked against unmasked (Fig. 11).

    The deviation of a star in a frame is its calibrated magnitude minus
    its own median over the frames where it is not masked (over all frames
    if it is masked in fewer than 3 clean ones). The improvement of a star
    is the mean ``|deviation|`` of its masked points minus that of its
    unmasked points: the error that masking removes from its light curve
    (the paper reports 0.51 mag on average).

    Parameters
    ----------
    tables : list of `~astropy.table.QTable`
        Per-star tables of `measure_frame`, one per frame in time order.
    n_stars : int or None, optional
        Keep only the ``n_stars`` brightest reference stars.
    min_frames : int, optional
        A star must be measured in at least this many frames.
    snr_min : float or None, optional
        Points below this S/N are left out.
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
    ids, frames, mags, masked, cats = [], [], [], [], []
    for i, t in enumerate(tables):
        ok = np.isfinite(np.asarray(u.Quantity(t["mag_cal"], u.mag).value)) & ~np.asarray(
            t["saturated"], bool
        )
        for col in ("blended", "edge"):
            if col in t.colnames:
                ok &= ~np.asarray(t[col], bool)
        if snr_min is not None:
            ok &= np.nan_to_num(np.asarray(t["snr"], float)) >= snr_min
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
