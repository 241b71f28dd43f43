# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The trail benchmark of issue 15: `astro_aeqa._trails.find_trails` and
`~astro_aeqa._trails.trail_mask` on simulated and real frames.

Run from the repository root (a few minutes on two cores; ``--quick``: one
seed, fewer lengths)::

    flock /tmp/aeqa_bench.lock python benchmarks/trails.py [--quick] [--no-evaluator]

Sections of ``benchmarks/results/trails.json``:

``grid``
    Star fields of both simulator presets (1024x1024, ``background=None``)
    with one injected trail (Gaussian profile) of peak 1, 2, 5, 20 sigma,
    FWHM 1, 3, 6 pixels and length 50, 150, 500 pixels or the full frame,
    at a random position and angle. Per case: trail-pixel recall (truth:
    within 1.5 FWHM of the segment, as the simulator draws trails), the
    false-mask rate on the other pixels, the number of trails reported, and
    the patch AUROC on a 64-pixel grid (score: the fraction of the patch's
    pixels in the trail mask; a patch is a trail patch when it holds a truth
    pixel).
``impostors``
    Frames without trails: pure noise, clean star fields, the simulator's
    diffraction spikes and halos (``background='spikes'``), a dense field
    (6000 stars), and bleed columns from saturated stars (valid, and
    invalid as the evaluator sees saturated pixels): trails reported and
    fraction of pixels masked.
``real``
    The 19-frame all-sky sequence (``allsky_pyasc_2015``): the trails found
    in each frame (one holds a meteor), and trails injected into the clean
    frames; the same injections into the SDSS g, r, i frames
    (``sdss_reprojected``) and the raw M13 series (``m13_raw_series``).
``evaluator``
    Simulated trail frames (both presets, peak 2, 5, 20 sigma, FWHM 1, 3,
    6 pixels) through ``AEQualityEvaluator.pretrained()``: pixel recall of
    the trail mask and of the whole mask, and patch AUROC of the network's
    patch scores alone, of the same raised above the threshold where the
    trail mask covers the patch, and of the masked fraction of each patch.
``meteor``
    The meteor of ``IMG01329`` through the evaluator, against a by-eye band
    (head and tail).
``timing``
    Seconds per frame (best of three) on one core, for noise frames of
    1024, 2048 and 4096 pixels a side with one faint trail.

The real data is found beside the checkout
(``Path(__file__).resolve().parents[2] / "shared" / "data" / "real"``);
sections whose data is missing are skipped.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from astro_aeqa._preprocessing import sky_statistics
from astro_aeqa._trails import find_trails, trail_mask
from astro_aeqa.simulation import GWAC_LIKE, PAPER_2P5M, simulate_image

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
RESULTS = Path(__file__).resolve().parent / "results" / "trails.json"
PATCH = 64


def to_snr(data, valid):
    """(data - sky) / noise with the evaluator's robust sky statistics."""
    data = np.asarray(data, np.float32)
    valid = valid & np.isfinite(data)
    stats = sky_statistics(data, valid)
    return (data - np.float32(stats.level)) / np.float32(stats.noise), valid


def add_trail(snr, rng, *, fwhm, peak, length):
    """Add a trail at a random place and angle; return its truth pixels."""
    ny, nx = snr.shape
    angle = rng.uniform(0, np.pi)
    ux, uy = np.cos(angle), np.sin(angle)
    full = length is None or length >= np.hypot(ny, nx)
    if full:  # through a point in the middle half, across the frame
        cx, cy = rng.uniform(0.25, 0.75) * nx, rng.uniform(0.25, 0.75) * ny
        half = np.hypot(ny, nx)
        x0, y0, length = cx - half * ux, cy - half * uy, 2 * half
    else:  # the segment entirely inside the frame (10 px margin)
        for _ in range(100):
            x0, y0 = rng.uniform(10, nx - 10), rng.uniform(10, ny - 10)
            x1, y1 = x0 + length * ux, y0 + length * uy
            if 10 <= x1 <= nx - 10 and 10 <= y1 <= ny - 10:
                break
    yy = np.arange(ny, dtype=np.float32)[:, None] - np.float32(y0)
    xx = np.arange(nx, dtype=np.float32)[None, :] - np.float32(x0)
    t = xx * np.float32(ux) + yy * np.float32(uy)
    d = yy * np.float32(ux) - xx * np.float32(uy)
    on = (t >= 0) & (t <= length)
    snr += np.float32(peak) * np.exp(-0.5 * (d / np.float32(fwhm / 2.3548)) ** 2) * on
    return (np.abs(d) <= 1.5 * fwhm) & on


def _auroc(score, label):
    """AUROC with average ranks for ties."""
    score, label = np.asarray(score, float), np.asarray(label, bool)
    n1, n0 = label.sum(), (~label).sum()
    if n1 == 0 or n0 == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(score.size)
    ranks[order] = np.arange(1, score.size + 1)
    for v in np.unique(score):
        tie = score == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def patch_auroc(mask, truth, valid):
    """AUROC of the per-patch masked fraction against 'patch holds trail pixels'."""
    ny, nx = mask.shape
    py, px = ny // PATCH, nx // PATCH
    cut = np.s_[: py * PATCH, : px * PATCH]

    def per_patch(a):
        return a[cut].reshape(py, PATCH, px, PATCH).mean(axis=(1, 3)).ravel()

    score, label = per_patch(mask & valid), per_patch(truth) > 0
    keep = per_patch(valid) > 0.5
    return _auroc(score[keep], label[keep])


def score_case(snr, valid, truth):
    trails = find_trails(snr, valid)
    mask = trail_mask(snr.shape, trails)
    usable = valid & np.isfinite(snr)
    return {
        "n_found": len(trails),
        "recall": float(mask[truth & usable].mean()) if (truth & usable).any() else None,
        "false_rate": float(mask[~truth & usable].mean()),
        "patch_auroc": patch_auroc(mask, truth, usable),
        "fwhm": [round(float(f), 2) for f in trails["fwhm"]],
    }


def grid(quick):
    shape = (1024, 1024)
    peaks, fwhms = (1.0, 2.0, 5.0, 20.0), (1.0, 3.0, 6.0)
    lengths = (50, 500, None) if quick else (50, 150, 500, None)
    out = []
    for inst in (PAPER_2P5M, GWAC_LIKE):
        for seed in range(1 if quick else 2):
            base, valid = to_snr(
                simulate_image(shape, instrument=inst, seed=100 + seed).ccd.data, True
            )
            rng = np.random.default_rng(seed)
            for peak in peaks:
                for fwhm in fwhms:
                    for length in lengths:
                        snr = base.copy()
                        truth = add_trail(snr, rng, fwhm=fwhm, peak=peak, length=length)
                        row = score_case(snr, valid, truth)
                        row.update(
                            instrument=inst.name,
                            seed=seed,
                            peak=peak,
                            fwhm_true=fwhm,
                            length=length or "full",
                        )
                        out.append(row)
    return out


def summarize_grid(rows):
    summary = {}
    for inst in sorted({r["instrument"] for r in rows}):
        for peak in sorted({r["peak"] for r in rows}):
            sel = [r for r in rows if r["instrument"] == inst and r["peak"] == peak]
            rec = np.array([r["recall"] for r in sel])
            au = [r["patch_auroc"] for r in sel if r["patch_auroc"] is not None]
            summary[f"{inst} peak {peak:g}"] = {
                "n_cases": len(sel),
                "mean_recall": round(float(rec.mean()), 4),
                "cases_recall_ge_0.95": round(float((rec >= 0.95).mean()), 3),
                "max_false_rate": round(max(r["false_rate"] for r in sel), 5),
                "mean_patch_auroc": round(float(np.mean(au)), 4) if au else None,
                "missed": [(r["fwhm_true"], r["length"]) for r in sel if r["recall"] < 0.95],
            }
    return summary


def bleeds(snr, valid, rng, n=4):
    """Saturated stars with bleed columns, in S/N units; returns the saturated pixels."""
    ny, nx = snr.shape
    sat = np.zeros(snr.shape, bool)
    yy, xx = np.mgrid[:ny, :nx]
    for _ in range(n):
        x, y = int(rng.uniform(50, nx - 50)), int(rng.uniform(80, ny - 80))
        half = int(rng.uniform(20, 70))
        snr += (3000.0 * np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / 2.5**2)).astype(np.float32)
        snr[y - half : y + half, x - 1 : x + 2] = 2000.0
        sat[y - half : y + half, x - 1 : x + 2] = True
        sat |= snr >= 1500
    return sat


def impostors(quick):
    shape = (1024, 1024)
    n = 2 if quick else 4
    out = {}
    rng = np.random.default_rng(7)

    def run(name, frames):
        found, masked = [], []
        for snr, valid in frames:
            t = find_trails(snr, valid)
            found.append(len(t))
            masked.append(float(trail_mask(snr.shape, t)[valid].mean()))
        out[name] = {
            "n_frames": len(found),
            "trails_reported": int(np.sum(found)),
            "max_masked_fraction": round(max(masked), 5),
        }

    run("noise", [(rng.normal(size=shape).astype(np.float32), None) for _ in range(n)])
    for inst in (PAPER_2P5M, GWAC_LIKE):
        run(
            f"{inst.name} star field",
            [
                to_snr(simulate_image(shape, instrument=inst, seed=s).ccd.data, True)
                for s in range(n)
            ],
        )
        run(
            f"{inst.name} spikes",
            [
                to_snr(
                    simulate_image(
                        shape, instrument=inst, background="spikes", level=1.0, seed=s
                    ).ccd.data,
                    True,
                )
                for s in range(n)
            ],
        )
    run(
        "PAPER_2P5M dense (6000 stars / 512x512)",
        [
            to_snr(
                simulate_image((512, 512), instrument=PAPER_2P5M, n_stars=6000, seed=s).ccd.data,
                True,
            )
            for s in range(n)
        ],
    )
    for invalid in (False, True):
        frames = []
        for s in range(n):
            snr, valid = to_snr(simulate_image(shape, instrument=PAPER_2P5M, seed=s).ccd.data, True)
            sat = bleeds(snr, valid, rng)
            frames.append((snr, valid & ~sat if invalid else valid))
        run("bleeds (saturated pixels invalid)" if invalid else "bleeds (valid)", frames)
    return out


def read_real(path):
    from astropy.io import fits

    with fits.open(path) as hdul:
        for hdu in hdul:
            if hdu.data is not None and hdu.data.ndim == 2:
                return hdu.data.astype(np.float32)
    msg = f"no 2-D image in {path}"
    raise ValueError(msg)


def allsky_footprint(frames):
    """The illuminated circle of the all-sky camera, from the median frame (shrunk by 8 %)."""
    from scipy import ndimage

    med = np.median(frames, axis=0)
    labels, _ = ndimage.label(med > np.percentile(med, 60))
    big = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    yy, xx = np.nonzero(labels == big)
    cy, cx, radius = yy.mean(), xx.mean(), np.sqrt(yy.size / np.pi)
    y, x = np.ogrid[: med.shape[0], : med.shape[1]]
    return np.hypot(y - cy, x - cx) < 0.92 * radius, (float(cx), float(cy), float(radius))


def inject(frames, rng, cases):
    """Inject each case into each frame; return the rows."""
    rows = []
    for name, snr0, valid in frames:
        for peak, fwhm, length in cases:
            snr = snr0.copy()
            truth = add_trail(snr, rng, fwhm=fwhm, peak=peak, length=length) & valid
            row = score_case(snr, valid, truth)
            row.update(frame=name, peak=peak, fwhm_true=fwhm, length=length or "full")
            rows.append(row)
    return rows


def summarize_injection(rows):
    out = {}
    for peak in sorted({r["peak"] for r in rows}):
        sel = [r for r in rows if r["peak"] == peak and r["recall"] is not None]
        rec = np.array([r["recall"] for r in sel])
        out[f"peak {peak:g}"] = {
            "n_cases": len(sel),
            "mean_recall": round(float(rec.mean()), 4),
            "cases_recall_ge_0.95": round(float((rec >= 0.95).mean()), 3),
            "max_false_rate": round(max(r["false_rate"] for r in sel), 5),
        }
    return out


def real(quick):
    out = {}
    rng = np.random.default_rng(15)
    cases = [
        (peak, fwhm, length)
        for peak in (2.0, 5.0, 20.0)
        for fwhm in (2.0, 4.0)
        for length in ((100, None) if quick else (100, 400, None))
    ]
    allsky = sorted((REAL / "allsky_pyasc_2015").glob("IMG013*.fits.bz2"))
    if allsky:
        data = np.array([read_real(p) for p in allsky])
        foot, circle = allsky_footprint(data)
        per_frame, clean = {}, []
        for path, d in zip(allsky, data, strict=True):
            snr, valid = to_snr(d, foot)
            t0 = time.perf_counter()
            trails = find_trails(snr, valid)
            dt = time.perf_counter() - t0
            name = path.name.split(".")[0]
            per_frame[name] = {
                "seconds": round(dt, 3),
                "trails": [
                    {k: (round(float(r[k]), 1) if k != "method" else str(r[k])) for k in r.colnames}
                    for r in trails
                ],
            }
            if len(trails) == 0:
                clean.append((name, snr, valid))
        out["allsky_footprint_circle_xyr"] = [round(c, 1) for c in circle]
        out["allsky_found"] = per_frame
        out["allsky_frames_with_trails"] = [k for k, v in per_frame.items() if v["trails"]]
        chosen = clean[:: max(1, len(clean) // (2 if quick else 4))][: 2 if quick else 4]
        rows = inject(chosen, rng, cases)
        out["allsky_injected"] = summarize_injection(rows)
        out["allsky_injected_rows"] = rows
    others = []
    for sub, pattern in (("sdss_reprojected", "*.fits.bz2"), ("m13_raw_series", "*.fits.bz2")):
        paths = sorted((REAL / sub).glob(pattern))
        if quick:
            paths = paths[:1]
        for path in paths:
            d = read_real(path)
            snr, valid = to_snr(d, np.isfinite(d) & (d != 0))
            base = find_trails(snr, valid)
            name = f"{sub}/{path.name.split('.')[0]}"
            out.setdefault("other_frames_found", {})[name] = len(base)
            others.append((name, snr, valid))
    # a crowded photographic plate: rows of stars are not trails; it holds one
    # short straight streak (about 40 px at x 760-797, y 249-260)
    plate = REAL / "M6707HH.fits"
    if plate.exists():
        d = read_real(plate)
        snr, valid = to_snr(d, np.isfinite(d))
        out["plate_found"] = [
            {k: (round(float(r[k]), 1) if k != "method" else str(r[k])) for k in r.colnames}
            for r in find_trails(snr, valid)
        ]
    if others:
        rows = inject(others, rng, cases)
        for sub in ("sdss_reprojected", "m13_raw_series"):
            sel = [r for r in rows if r["frame"].startswith(sub)]
            if sel:
                out[f"{sub}_injected"] = summarize_injection(sel)
        out["other_injected_rows"] = rows
    return out


def timing():
    out = {}
    rng = np.random.default_rng(3)
    for side in (1024, 2048, 4096):
        snr = rng.normal(size=(side, side)).astype(np.float32)
        add_trail(snr, rng, fwhm=2.0, peak=2.0, length=None)
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            find_trails(snr)
            best = min(best, time.perf_counter() - t0)
        out[f"{side}x{side}"] = round(best, 3)
    return out


def evaluator(quick):
    """Trails through `AEQualityEvaluator.pretrained()`: pixel recall and patch AUROC.

    Simulated 1024x1024 frames of both presets with one trail injected in data
    units (peak times the frame's sky noise). Patch truth: the patch holds a
    trail pixel. Patch scores: ``res.patch_scores`` alone (the network), and
    the same raised above the threshold where the trail mask covers the patch
    (``max(score, threshold * (1 + covered fraction))``), and the fraction of
    the patch in ``res.mask`` (what the user gets).
    """
    from astro_aeqa import AEQualityEvaluator

    ev = AEQualityEvaluator.pretrained()
    shape = (1024, 1024)
    rows, pooled = [], {"network": ([], []), "network+trails": ([], []), "mask": ([], [])}
    lengths = (50, 150, None) if quick else (50, 150, 500, None)
    for inst in (PAPER_2P5M, GWAC_LIKE):
        sim = simulate_image(shape, instrument=inst, seed=300)
        data0 = np.asarray(sim.ccd.data, np.float32)
        noise = float(sky_statistics(data0, np.isfinite(data0)).noise)
        rng = np.random.default_rng(30)
        for peak in (2.0, 5.0, 20.0):
            for fwhm in (1.0, 3.0, 6.0):
                for length in lengths:
                    trail = np.zeros(shape, np.float32)
                    truth = add_trail(trail, rng, fwhm=fwhm, peak=peak * noise, length=length)
                    ccd = sim.ccd.copy()
                    ccd.data = data0 + trail
                    res = ev.evaluate(ccd)
                    ps = res.patch_size
                    py, px = np.shape(res.patch_scores)
                    cut = np.s_[: py * ps, : px * ps]

                    def per_patch(a, ps=ps, py=py, px=px, cut=cut):
                        return a[cut].reshape(py, ps, px, ps).mean(axis=(1, 3)).ravel()

                    label = per_patch(truth) > 0
                    score = np.asarray(res.patch_scores, float).ravel()
                    tm = res.trail_mask if res.trail_mask is not None else np.zeros(shape, bool)
                    covered = per_patch(tm)
                    raised = np.where(
                        covered > 0, np.maximum(score, res.threshold * (1 + covered)), score
                    )
                    masked = per_patch(res.mask)
                    for key, val in (
                        ("network", score),
                        ("network+trails", raised),
                        ("mask", masked),
                    ):
                        pooled[key][0].append(val)
                        pooled[key][1].append(label)
                    rows.append(
                        {
                            "instrument": inst.name,
                            "peak": peak,
                            "fwhm_true": fwhm,
                            "length": length or "full",
                            "n_trails": 0 if res.trails is None else len(res.trails),
                            "recall": float(res.mask[truth].mean()),
                            "false_rate": float(res.mask[~truth].mean()),
                            "trail_recall": float(tm[truth].mean()),
                            "trail_false_rate": float(tm[~truth].mean()),
                            "patch_auroc_network": _auroc(score, label),
                            "patch_auroc_network_trails": _auroc(raised, label),
                            "patch_auroc_mask": _auroc(masked, label),
                        }
                    )
    summary = {}
    for key, (scores, labels) in pooled.items():
        summary[f"pooled patch AUROC ({key})"] = round(
            _auroc(np.concatenate(scores), np.concatenate(labels)), 4
        )
    for peak in (2.0, 5.0, 20.0):
        sel = [r for r in rows if r["peak"] == peak]
        summary[f"peak {peak:g}"] = {
            "n_cases": len(sel),
            "mean_trail_recall": round(float(np.mean([r["trail_recall"] for r in sel])), 4),
            "min_trail_recall": round(float(np.min([r["trail_recall"] for r in sel])), 4),
            "max_mask_false_rate": round(max(r["false_rate"] for r in sel), 5),
            "mean_patch_auroc_network": round(
                float(np.mean([r["patch_auroc_network"] for r in sel])), 4
            ),
            "mean_patch_auroc_network_trails": round(
                float(np.mean([r["patch_auroc_network_trails"] for r in sel])), 4
            ),
        }
    return {"summary": summary, "rows": rows}


def meteor():
    """The meteor of IMG01329 through the evaluator: by-eye band, head and tail."""
    from astro_aeqa import AEQualityEvaluator

    path = REAL / "allsky_pyasc_2015" / "IMG01329.fits.bz2"
    if not path.exists():
        return {}
    res = AEQualityEvaluator.pretrained().evaluate(str(path))
    shape = res.mask.shape
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    # by eye: the streak runs from its faint tail at (898, 632) to the end of
    # its saturated head at (1066, 624); the head (x >= 1025) is about 8 pixels
    # wide, the tail 3-4
    x0, y0, x1, y1 = 898.0, 632.0, 1066.0, 624.0
    ux, uy = (x1 - x0), (y1 - y0)
    n = np.hypot(ux, uy)
    t = ((xx - x0) * ux + (yy - y0) * uy) / n
    d = np.abs(-(xx - x0) * uy + (yy - y0) * ux) / n
    half = np.where(xx >= 1025, 4.0, 2.0)
    band = (t >= 0) & (t <= n) & (d <= half)
    tm = res.trail_mask if res.trail_mask is not None else np.zeros(shape, bool)
    head = band & (xx >= 1025)
    return {
        "label": {
            "x0": x0,
            "y0": y0,
            "x1": x1,
            "y1": y1,
            "half_width_tail": 2.0,
            "half_width_head": 4.0,
        },
        "trails": [
            {k: (round(float(r[k]), 1) if k != "method" else str(r[k])) for k in r.colnames}
            for r in (res.trails if res.trails is not None else [])
        ],
        "recall_trail_mask": round(float(tm[band].mean()), 4),
        "recall_head": round(float(tm[head].mean()), 4),
        "recall_tail": round(float(tm[band & ~head].mean()), 4),
        "trail_mask_elsewhere": round(float(tm[~band & res.valid].mean()), 5)
        if getattr(res, "valid", None) is not None
        else round(float(tm[~band].mean()), 5),
    }


def markdown(results):
    lines = [
        "# Trail detection numbers (issue 15)",
        "",
        "`python benchmarks/trails.py` -> `benchmarks/results/trails.json`.",
        "Recall: fraction of trail pixels (within 1.5 FWHM of the segment) in the pixel mask of",
        "`trail_mask(find_trails(...))`; false rate: masked fraction of the other valid pixels.",
        "",
        "## Simulated star fields, 1024x1024, one trail (FWHM 1/3/6 px, all lengths)",
        "",
        "| preset, peak | cases | mean recall | cases >= 95 % | max false rate | patch AUROC | missed (FWHM, length) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, s in results["grid_summary"].items():
        lines.append(
            f"| {key} | {s['n_cases']} | {s['mean_recall']:.3f} | {s['cases_recall_ge_0.95']:.2f} "
            f"| {s['max_false_rate']:.4f} | {s['mean_patch_auroc']} | {s['missed']} |"
        )
    lines += ["", "## Frames without trails", "", "| frames | n | trails reported | max masked |"]
    lines.append("|---|---|---|---|")
    for key, s in results["impostors"].items():
        lines.append(
            f"| {key} | {s['n_frames']} | {s['trails_reported']} | {s['max_masked_fraction']:.4f} |"
        )
    r = results.get("real", {})
    if r:
        lines += ["", "## Real frames", ""]
        if "allsky_frames_with_trails" in r:
            lines.append(f"All-sky frames with a trail found: {r['allsky_frames_with_trails']}")
            for name in r["allsky_frames_with_trails"]:
                for t in r["allsky_found"][name]["trails"]:
                    lines.append(
                        f"- {name}: ({t['x0']}, {t['y0']}) -> ({t['x1']}, {t['y1']}), "
                        f"PA {t['theta']} deg, FWHM {t['fwhm']} px, length {t['length']} px, "
                        f"peak {t['peak']} sigma, S/N {t['snr']}"
                    )
            lines.append("")
        lines += ["| injected into | peak | cases | mean recall | cases >= 95 % | max false rate |"]
        lines.append("|---|---|---|---|---|---|")
        for sub in ("allsky_injected", "sdss_reprojected_injected", "m13_raw_series_injected"):
            for key, s in r.get(sub, {}).items():
                lines.append(
                    f"| {sub.replace('_injected', '')} | {key} | {s['n_cases']} | "
                    f"{s['mean_recall']:.3f} | {s['cases_recall_ge_0.95']:.2f} | {s['max_false_rate']:.4f} |"
                )
        if "other_frames_found" in r:
            lines.append("")
            lines.append(
                f"Trails found in the real frames before injection: {r['other_frames_found']}"
            )
    ev = results.get("evaluator")
    if ev:
        lines += ["", "## Through the evaluator (AEQualityEvaluator.pretrained())", ""]
        for key, val in ev["summary"].items():
            lines.append(f"- {key}: {val}")
    met = results.get("meteor")
    if met:
        lines += ["", "## The meteor of IMG01329 through the evaluator", ""]
        for key in ("recall_trail_mask", "recall_head", "recall_tail", "trail_mask_elsewhere"):
            lines.append(f"- {key}: {met[key]}")
        for t in met["trails"]:
            lines.append(f"- trail: {t}")
    lines += ["", "## Seconds per frame (best of 3, one core)", ""]
    lines += [f"- {k}: {v} s" for k, v in results["timing"].items()]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--no-evaluator", action="store_true", help="skip the evaluator and meteor sections"
    )
    parser.add_argument("--notes", default="/work/notes/trails_numbers.md")
    args = parser.parse_args()
    t0 = time.perf_counter()
    results = {"command": "python benchmarks/trails.py" + (" --quick" if args.quick else "")}
    results["timing"] = timing()
    rows = grid(args.quick)
    results["grid_summary"] = summarize_grid(rows)
    results["impostors"] = impostors(args.quick)
    results["real"] = real(args.quick) if REAL.is_dir() else {}
    if not args.no_evaluator:
        results["evaluator"] = evaluator(args.quick)
        results["meteor"] = meteor() if REAL.is_dir() else {}
    results["grid"] = rows
    results["seconds"] = round(time.perf_counter() - t0, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, default=str) + "\n")
    text = markdown(results)
    if args.notes and os.path.isdir(os.path.dirname(args.notes)):
        Path(args.notes).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
