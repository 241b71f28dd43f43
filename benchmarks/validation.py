# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Quality benchmark of `astro_aeqa.validation`.

Run ``python benchmarks/validation.py`` (about 2 minutes on 2 cores). It
reports, with a one-line verdict each:

1. clean simulated frames: the zero point against the truth, and the median
   |error| of stars with S/N > 50;
2. a cloudy simulated sequence (>= 50 frames, drifting clouds): the median
   |error| of masked over unmasked stars, the error-against-score curve and
   whether it rises monotonically (`astro_aeqa.validation.monotonic_rise`),
   and the light-curve improvement from masking (paper: 0.51);
3. the real plate M6707HH.fits with its Gaia DR2 extract, with the package
   defaults (forced photometry, characteristic curve chosen by
   cross-validation) and with ``g_range=(13, 18)``: the curve, the robust
   zero-point scatter (target <= 0.15 mag), the blend flags checked against
   the whole catalogue, and the error-against-score table (proxy score: local
   background RMS).

Masks and score maps come from ``--mask-source``: ``truth`` (default: mask =
truth > 0.1, score = per-patch mean of the truth map), ``evaluator`` (the mask
and score map of the model given by ``--model``) or ``proxy`` (the truth-free
background-RMS score, mask = score above ``--threshold``). S/N cuts are on each
star's median S/N over the sequence.
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u

from astro_aeqa.exceptions import CatalogError
from astro_aeqa.validation import (
    background_rms_score_map,
    error_vs_score,
    light_curve_study,
    mask_ratio_study,
    masked_vs_unmasked,
    measure_frame,
    score_map_from_array,
)

# shared/data/real beside the checkout (not shipped with the package)
REAL = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "real")


def mask_source_truth(sim, patch_size=64, threshold=0.1):
    """Mask = truth > threshold; score map = per-patch mean of the truth map.

    For clouds the truth map is the extinction, so a star under truth t
    loses -2.5 log10(1 - t) mag: 0.11 mag at t = 0.1, 0.39 mag at t = 0.3.
    """
    return sim.truth > threshold, score_map_from_array(sim.truth, patch_size, wcs=sim.ccd.wcs)


def mask_source_proxy(sim, patch_size=64, threshold=None):
    """Truth-free: background-RMS score map; mask = patches with score > threshold."""
    smap = background_rms_score_map(sim.ccd, patch_size)
    grid = np.nan_to_num(smap.data) > (1.3 if threshold is None else threshold)
    mask = np.kron(grid, np.ones((patch_size, patch_size), bool))[
        : sim.ccd.shape[0], : sim.ccd.shape[1]
    ]
    return mask, smap


def mask_source_evaluator(evaluator):
    """Return a mask source that uses an `AEQualityEvaluator`: its mask and its patch score map."""

    def source(sim, patch_size=None, threshold=None):
        res = evaluator.evaluate(sim.ccd)
        return res.mask, res.score_map

    return source


def select_mask_source(name, model=None, parser=None):
    """The mask source called ``name`` ('truth', 'proxy' or 'evaluator' with a model file)."""
    if name == "evaluator":
        if not model:
            msg = "--mask-source evaluator needs --model MODEL.safetensors"
            if parser is not None:
                parser.error(msg)
            raise ValueError(msg)
        from astro_aeqa import AEQualityEvaluator

        return mask_source_evaluator(AEQualityEvaluator.load(model, device="cpu"))
    return {"truth": mask_source_truth, "proxy": mask_source_proxy}[name]


def moffat_aperture_fraction(fwhm_pix, beta, radius, r_in, r_out):
    """Fraction of a Moffat star's flux left after aperture minus annulus background."""
    alpha = fwhm_pix / (2 * np.sqrt(2 ** (1 / beta) - 1))

    def enclosed(r):
        return 1 - (1 + (r / alpha) ** 2) ** (1 - beta)

    sb_annulus = (enclosed(r_out) - enclosed(r_in)) / (np.pi * (r_out**2 - r_in**2))
    return enclosed(radius) - np.pi * radius**2 * sb_annulus


def _with_mask(sim, source, **kw):
    mask, smap = source(sim, **kw)
    ccd = sim.ccd.copy()
    ccd.mask = mask if ccd.mask is None else (np.asarray(ccd.mask, bool) | mask)
    return ccd, smap


def clean_frames(n_frames=3, shape=(512, 512), seed=100):
    from astro_aeqa.simulation import PAPER_2P5M, simulate_image

    rows = []
    for i in range(n_frames):
        sim = simulate_image(
            shape=shape,
            instrument=PAPER_2P5M,
            fwhm=0.7 * u.arcsec,
            background=None,
            seed=seed + i,
            n_stars=400,
        )
        meta = sim.ccd.meta
        stars = measure_frame(
            sim.ccd,
            sim.catalog[sim.catalog["type"] == "star"],
            positions="detect",
            fwhm=meta["FWHMPIX"],
        )
        fwhm = meta["FWHMPIX"]
        frac = moffat_aperture_fraction(fwhm, meta["PSFBETA"], 1.5 * fwhm, 3 * fwhm, 5 * fwhm)
        zp_true = meta["MAGZP"] - 2.5 * np.log10(meta["GAIN"]) + 2.5 * np.log10(frac)
        clean = stars["snr"] > 50
        rows.append(
            {
                "frame": i,
                "zp_fit": stars.meta["zero_point"],
                "zp_true": zp_true,
                "zp_diff": stars.meta["zero_point"] - zp_true,
                "zp_scatter": stars.meta["zp_scatter"],
                "n_matches": len(stars),
                "n_snr50": int(clean.sum()),
                "median_abs_error_snr50": float(np.median(np.abs(stars["error"][clean].value))),
            }
        )
    return rows


def sequence_tables(
    n_frames=50,
    shape=(512, 512),
    seed=7,
    level=1.0,
    mask_source=mask_source_truth,
    patch_size=64,
    threshold=0.1,
    cloud_threshold=0.4,
    n_stars=600,
    cloud_speed=(0.0, 12.0),
):
    """The per-star tables of a field that is clear, then crossed by drifting clouds, then clear.

    The cloud level of frame i is ``level * min(1, 2 sin(pi i / (n - 1))**2)``:
    clear at both ends, at full thickness over the middle half. The screen is
    cut at ``cloud_threshold`` so that clear sky remains between clouds.
    Returns ``(tables, n_frames_sequence_zero_point)``.
    """
    from astro_aeqa.simulation import PAPER_2P5M, simulate_sequence

    frames = simulate_sequence(
        n_frames,
        shape=shape,
        instrument=PAPER_2P5M,
        fwhm=0.7 * u.arcsec,
        seed=seed,
        level=level
        * np.minimum(1.0, 2.0 * np.sin(np.pi * np.arange(n_frames) / max(n_frames - 1, 1)) ** 2),
        cloud_threshold=cloud_threshold,
        cloud_speed=cloud_speed,
        n_stars=n_stars,
    )
    tables, retry = [], []
    for i, sim in enumerate(frames):
        ccd, smap = _with_mask(sim, mask_source, patch_size=patch_size, threshold=threshold)
        stars_cat = sim.catalog[sim.catalog["type"] == "star"]
        if "source_id" not in stars_cat.colnames:
            stars_cat = stars_cat.copy()
            stars_cat["source_id"] = np.arange(len(stars_cat))
        kw = {
            "score_map": smap,
            "positions": "catalog",
            "fwhm": ccd.meta["FWHMPIX"],
            "min_matches": 5,
            "name": f"frame{i:03d}",
        }
        try:
            tables.append((i, measure_frame(ccd, stars_cat, **kw)))
        except CatalogError:  # its clear part holds too few stars for a zero point
            retry.append((i, ccd, stars_cat, kw))
    # One field, one photometric night: a mostly masked frame takes the median zero
    # point of the frames that could be calibrated, as relative photometry of a
    # sequence does. Skipping it would drop the thickest clouds from every study.
    zp_seq = float(np.median([t.meta["zero_point"] for _, t in tables]))
    for i, ccd, stars_cat, kw in retry:
        tables.append((i, measure_frame(ccd, stars_cat, zero_point=zp_seq, **kw)))
    return [t for _, t in sorted(tables, key=lambda it: it[0])], len(retry)


def cloudy_sequence(
    n_frames=50,
    shape=(512, 512),
    seed=7,
    level=1.0,
    mask_source=mask_source_truth,
    patch_size=64,
    threshold=0.1,
    snr_min=20.0,
    snr_min_curve=100.0,
    cloud_threshold=0.4,
    n_stars=600,
):
    """The studies on `sequence_tables`.

    ``snr_min`` selects the stars of the masked/unmasked and light-curve
    studies, ``snr_min_curve`` those of the error-against-score curve: its
    low bins measure errors of 0.01 mag, which photon noise swamps below S/N
    100 (sigma = 0.011 mag at S/N 100).
    """
    tables, n_retry = sequence_tables(
        n_frames,
        shape=shape,
        seed=seed,
        level=level,
        mask_source=mask_source,
        patch_size=patch_size,
        threshold=threshold,
        cloud_threshold=cloud_threshold,
        n_stars=n_stars,
    )
    curves = {
        f"snr{snr:g}": error_vs_score(tables, n_bins=8, snr_min=snr)[0]
        for snr in (snr_min_curve, snr_min)
    }
    mvu, _ = masked_vs_unmasked(tables, snr_min=snr_min)
    mr, _ = mask_ratio_study(tables, snr_min=snr_min)
    lc, _ = light_curve_study(tables, min_frames=min(10, len(tables)), snr_min=snr_min)
    out = {
        "n_frames": n_frames,
        "n_frames_measured": len(tables),
        "n_frames_sequence_zero_point": n_retry,
        "n_star_points": int(sum(len(t) for t in tables)),
        "median_abs_error_masked": mvu.meta["median_abs_error_masked"],
        "median_abs_error_unmasked": mvu.meta["median_abs_error_unmasked"],
        "masked_over_unmasked": mvu.meta["ratio"],
        "error_vs_score_snr_min": snr_min_curve,
        "mask_ratio_groups": [
            (float(a), float(b), int(n), round(float(e), 4))
            for a, b, n, e in zip(
                mr["ratio_lo"],
                mr["ratio_hi"],
                mr["n_frames"],
                np.nan_to_num(mr["median_abs_error"].value),
                strict=True,
            )
        ],
        "lightcurve_mean_improvement_mag": lc.meta["mean_improvement"],
        "lightcurve_rms_reduction_mag": lc.meta["rms_reduction"],
        "lightcurve_n_stars_masked": lc.meta["n_stars_masked"],
    }
    for name, evs in curves.items():
        test = evs.meta["monotonic_test"]
        out[f"error_vs_score_{name}"] = {
            "score_mid": [round(float(v), 4) for v in evs["score_mid"]],
            "n_stars": [int(v) for v in evs["n_stars"]],
            "median": [round(float(v), 4) for v in evs["median_abs_error"].value],
            "median_err": [round(float(v), 4) for v in evs["median_abs_error_err"].value],
            "mean": [round(float(v), 4) for v in evs["mean_abs_error"].value],
            "mean_err": [round(float(v), 4) for v in evs["mean_abs_error_err"].value],
            "median_over_sigma": [round(float(v), 2) for v in evs["median_abs_error_over_sigma"]],
            "monotonic": evs.meta["monotonic"],
            "monotonic_mean": evs.meta["monotonic_mean"],
            "strictly_increasing": evs.meta["strictly_increasing"],
            "p_never_falls": test["p_never_falls"] if test else None,
            "rise_sigma": test["rise_sigma"] if test else None,
            "spearman_rho": test["spearman_rho"] if test else None,
        }
    return out


def _blend_check(t, catalog, ccd, fwhm):
    """Stars of ``t`` with a catalogue neighbour at most 2.5 mag fainter within the aperture's
    reach (radius + 1.5 FWHM), counted independently of measure_frame, and how many are flagged."""
    from astro_aeqa.validation import load_catalog

    cat = load_catalog(catalog)
    x, y = ccd.wcs.celestial.world_to_pixel_values(cat["ra"].value, cat["dec"].value)
    g = cat["phot_g_mean_mag"].value
    reach = t.meta["aperture_radius_pix"] + 1.5 * fwhm
    need = np.zeros(len(t), bool)
    for k, (xs, ys, ci) in enumerate(zip(t["x"], t["y"], t["catalog_index"], strict=True)):
        d = np.hypot(x - xs, y - ys)
        near = (d <= reach) & (np.arange(len(cat)) != ci) & (g <= g[ci] + 2.5)
        need[k] = near.any()
    return int(need.sum()), int((need & ~np.asarray(t["blended"], bool)).sum())


def real_plate(patch_size=64, g_range=(13, 18)):
    """The POSS-I plate with package defaults, and with ``g_range``."""
    from astro_aeqa.validation._utils import as_ccd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ccd = as_ccd(f"{REAL}/M6707HH.fits")
    smap = background_rms_score_map(ccd, patch_size)
    catalog = f"{REAL}/M67_gaiadr2_AriaKoul.csv"
    out = {}
    for label, kw in (
        ("default", {}),
        (f"g_range_{g_range[0]}_{g_range[1]}", {"g_range": g_range}),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the catalogue has no proper motions (DR2 extract)
            t = measure_frame(ccd, catalog, score_map=smap, fwhm=3.0, name="M6707HH.fits", **kw)
        evs, _ = error_vs_score(t, n_bins=6)
        n_need, n_missed = _blend_check(t, catalog, ccd, 3.0)
        out[label] = {
            "n_measured": t.meta["n_matches"],
            "n_zp": t.meta["n_zp"],
            "curve": t.meta["curve"],
            "cv_scatter": t.meta["cv_scatter"],
            "zero_point": t.meta["zero_point"],
            "slope": t.meta["slope"],
            "zp_scatter_robust": t.meta["zp_scatter"],
            "n_blended": t.meta["n_blended"],
            "n_with_bright_neighbour": n_need,
            "n_with_bright_neighbour_unflagged": n_missed,
            "n_saturated": int(np.sum(t["saturated"])),
            "error_vs_score": [
                (round(float(a), 3), round(float(b), 3), int(n), round(float(c), 4))
                for a, b, n, c in zip(
                    evs["score_lo"],
                    evs["score_hi"],
                    evs["n_stars"],
                    evs["median_abs_error"].value,
                    strict=True,
                )
            ],
        }
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-frames", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--mask-source", choices=["truth", "proxy", "evaluator"], default="truth")
    parser.add_argument(
        "--model",
        default=None,
        help="model file of the evaluator (with --mask-source evaluator), e.g. the "
        "one benchmarks/evaluator_quality.py writes",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="mask threshold: truth > 0.1 (truth) or score > 1.3 (proxy) by default",
    )
    parser.add_argument("--level", type=float, default=1.0, help="peak cloud level of the sequence")
    parser.add_argument(
        "--snr-min", type=float, default=20.0, help="S/N cut of the masked and light-curve studies"
    )
    parser.add_argument(
        "--snr-min-curve",
        type=float,
        default=100.0,
        help="S/N cut of the error-against-score curve (also reported at --snr-min)",
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args(argv)
    source = select_mask_source(args.mask_source, args.model, parser)
    results = {}
    t0 = time.perf_counter()
    results["clean"] = clean_frames(shape=(args.size, args.size))
    t1 = time.perf_counter()
    threshold = (
        args.threshold
        if args.threshold is not None
        else (0.1 if args.mask_source == "truth" else 1.3)
    )
    results["sequence"] = cloudy_sequence(
        n_frames=args.n_frames,
        shape=(args.size, args.size),
        mask_source=source,
        threshold=threshold,
        level=args.level,
        snr_min=args.snr_min,
        snr_min_curve=args.snr_min_curve,
    )
    t2 = time.perf_counter()
    results["real"] = real_plate()
    t3 = time.perf_counter()
    results["timing_s"] = {"clean": t1 - t0, "sequence": t2 - t1, "real": t3 - t2}
    print(json.dumps(results, indent=1, default=float))
    c, s, r = results["clean"], results["sequence"], results["real"]
    zp = max(abs(row["zp_diff"]) for row in c)
    err = max(row["median_abs_error_snr50"] for row in c)
    print(
        f"\nzero point within 0.02 mag: max |zp - truth| = {zp:.4f} -> {'PASS' if zp < 0.02 else 'FAIL'}"
    )
    print(
        f"median |error| S/N>50 < 0.05: worst frame {err:.4f} -> {'PASS' if err < 0.05 else 'FAIL'}"
    )
    ratio = s["masked_over_unmasked"]
    print(
        f"masked/unmasked median |error| >= 3 ({args.mask_source} masks): {ratio:.2f} -> "
        f"{'PASS' if ratio >= 3 else 'FAIL'}"
    )
    for name in (f"snr{args.snr_min_curve:g}", f"snr{args.snr_min:g}"):
        c = s[f"error_vs_score_{name}"]
        print(
            f"error vs score rises monotonically ({name}, median; monotonic_rise): "
            f"{'PASS' if c['monotonic'] else 'FAIL'} (p_never_falls={c['p_never_falls']:.3g}, "
            f"rise {c['rise_sigma']:.1f} sigma, binned Spearman {c['spearman_rho']:.2f}); "
            f"mean: {'PASS' if c['monotonic_mean'] else 'FAIL'}; strictly increasing: "
            f"{c['strictly_increasing']}"
        )
    print(f"light-curve improvement: {s['lightcurve_mean_improvement_mag']:.3f} mag (paper: 0.51)")
    for label, row in r.items():
        print(
            f"M67 plate ({label}): {row['n_measured']} stars, {row['curve']} curve, robust scatter "
            f"{row['zp_scatter_robust']:.3f} mag on {row['n_zp']} stars -> "
            f"{'PASS' if row['zp_scatter_robust'] <= 0.15 else 'FAIL'}; blended "
            f"{row['n_blended']}, unflagged with a neighbour <= G + 2.5: "
            f"{row['n_with_bright_neighbour_unflagged']}"
        )
    if args.json:
        from astro_aeqa.utils import atomic_write

        with atomic_write(args.json, overwrite=args.overwrite) as tmp, open(tmp, "w") as fh:
            json.dump(results, fh, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
