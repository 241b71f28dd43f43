# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The quality benchmark: the paper's configuration, ours and a
classical baseline on the same simulated frames, against the simulator's truth.

Run from the repository root (about 10 min on two cores; ``--quick``: 2 min)::

    flock /tmp/aeqa_cpu.lock python benchmarks/quality.py [--quick]

Fields of both presets (``PAPER_2P5M``, ``GWAC_LIKE``) with clouds, the
Moon, shutter shadows, satellite trails and three PSF defects (smeared,
doubled, defocused stars on half of the frame), clean frames, and a FWHM
sweep. A ``small`` network is trained per preset on clean reference frames
for each normalisation. Configurations:

``paper``
    ``normalization='minmax', sky_term=False, aggregate='mean'``, masked at
    a relative score (score / median clean reference score) of 1.25.
``ours``
    The package default (``normalization='noise'``, sky term, trimmed mean,
    ``star_aware``, ``psf_term``, closing only, ``fpr=0.005`` calibrated on
    clean frames), with ablations (one feature at a time) beside it.
``classical``
    photutils ``Background2D`` mesh level and RMS against the frame median,
    in units of the median sky RMS, masked above ``--classical-sigma``.

Per configuration and defect: patch AUROC, mask IoU, false-mask rate on
clean frames, Spearman rho of the image score against FWHM, photometric gain
(median ``|error|`` of all stars over that of the unmasked stars, from
`astro_aeqa.validation.measure_frame`) and the fraction of catalogue stars
masked on clean frames. Sections ``fpr`` (measured false-mask rate against
the requested ``fpr``) and ``patch`` (quality against patch size) follow.
JSON goes to ``benchmarks/results/quality.json``.
"""

import argparse
import hashlib
import inspect
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).parent))
from evaluator_quality import auroc, classical_patch_scores, patch_truth  # noqa: E402
from validation import moffat_aperture_fraction  # noqa: E402

from astro_aeqa import AEQualityEvaluator  # noqa: E402
from astro_aeqa._masking import (  # noqa: E402
    clean_patch_mask,
    conformal_threshold,
    patch_mask_to_pixel_mask,
)
from astro_aeqa._stars import measure_fwhm  # noqa: E402
from astro_aeqa.simulation import GWAC_LIKE, PAPER_2P5M, simulate_image  # noqa: E402
from astro_aeqa.validation import measure_frame  # noqa: E402

POSITIVE, NEGATIVE = 0.2, 0.02
PRESETS = {
    # instrument, FWHM range of the references (arcsec), FWHM of the test frames
    "PAPER_2P5M": (PAPER_2P5M, (0.5, 0.8), 0.65),
    "GWAC_LIKE": (GWAC_LIKE, (18.0, 28.0), 23.0),
}
DEFECTS = {
    # name -> simulate_image keywords
    "cloud": {"background": "cloud", "level": 0.6},
    "moon": {"background": "moon", "level": 0.7},
    "shutter": {"background": "shutter", "level": 0.7},
    "trail": {"background": "trail", "level": 1.0},
    "elongated": {"psf_defect": "elongated", "defect_level": 0.7},
    "double": {"psf_defect": "double", "defect_level": 0.7},
    "defocus": {"psf_defect": "defocus", "defect_level": 0.7},
}
PAPER_RELATIVE_THRESHOLD = 1.25
DEFAULT_FPR = inspect.signature(AEQualityEvaluator).parameters["fpr"].default


def simulate(preset, shape, fwhm, seed, **kwargs):
    instrument = PRESETS[preset][0]
    if "psf_defect" in kwargs:  # the defect on the left half: both classes in one frame
        kwargs["defect_region"] = np.s_[:, : shape[1] // 2]
    return simulate_image(
        shape=shape, instrument=instrument, fwhm=fwhm * u.arcsec, seed=seed, **kwargs
    )


class CachedResidual:
    """Reconstruct each tile once: aggregates, patch sizes and thresholds reuse it."""

    def __init__(self, ev):
        self.cache, self.compute = {}, ev.reconstructor_.residuals
        ev.reconstructor_.residuals = self

    def __call__(self, x, origins, regions, t, residual, **kwargs):
        key = hashlib.blake2b(x.tobytes() + origins.tobytes(), digest_size=16).digest()
        if key not in self.cache:
            self.compute(x, origins, regions, t, residual, **kwargs)
            self.cache[key] = [residual[y1:y2, x1:x2].copy() for y1, y2, x1, x2 in regions]
        for (y1, y2, x1, x2), owned in zip(regions, self.cache[key], strict=True):
            residual[y1:y2, x1:x2] = owned


def train(preset, normalization, refs, args, out_dir):
    kind = "quick" if args.quick else "full"
    path = out_dir / f"quality_{preset}_{normalization}_{kind}.safetensors"
    if args.reuse_models and path.exists():
        ev = AEQualityEvaluator.load(path, device="cpu")
    else:
        ev = AEQualityEvaluator(
            "small", patch_size=args.patch_size, normalization=normalization, device="cpu", seed=0
        )
        ev.fit(
            refs,
            n_epochs=args.n_epochs,
            batch_size=16,
            steps_per_epoch=args.steps,
            progress_bar=False,
        )
        ev.save(path, overwrite=True)
    CachedResidual(ev)
    return ev


def mask_of(scores, threshold, shape, patch_size, morphology=(1, 1)):
    with np.errstate(invalid="ignore"):
        raw = scores > threshold
    patch_mask = clean_patch_mask(raw, opening=morphology[0], closing=morphology[1])
    return patch_mask, patch_mask_to_pixel_mask(patch_mask, patch_size, shape)


class Config:
    """One way of scoring and masking; ``score(sim)`` returns (patch scores, patch mask)."""

    def __init__(
        self,
        name,
        ev=None,
        *,
        aggregate="mean",
        star_aware=False,
        psf_term=False,
        morphology=(1, 1),
        fpr=None,
        sigma=None,
    ):
        self.name, self.ev, self.sigma = name, ev, sigma
        self.options = {
            "aggregate": aggregate,
            "star_aware": star_aware,
            "psf_term": psf_term,
            "morphology": morphology,
        }
        if ev is not None:
            self.options["fpr"] = DEFAULT_FPR if fpr is None else fpr

    def _setup(self):
        for key, value in self.options.items():
            setattr(self.ev, key, value)

    def calibrate(self, frames, fpr=None):
        if self.ev is None:
            if self.sigma is None:  # the classical threshold at the same clean-frame rate
                clean = np.concatenate(
                    [classical_patch_scores(s.ccd.data, self.patch_size).ravel() for s in frames]
                )
                self.sigma = float(conformal_threshold(clean, fpr or DEFAULT_FPR))
            return
        self._setup()
        self.ev.calibrate([sim.ccd for sim in frames], progress_bar=False)
        self.reference_scores = self.ev.reference_scores_.copy()
        self.psf_calibration = self.ev.psf_calibration_

    def score(self, sim, patch_size):
        if self.ev is None:
            scores = classical_patch_scores(sim.ccd.data, patch_size)
            return scores, mask_of(scores, self.sigma, sim.ccd.shape, patch_size)[0]
        self._setup()
        self.ev.reference_scores_ = self.reference_scores
        self.ev.psf_calibration_ = self.psf_calibration
        if self.name == "paper":
            threshold = PAPER_RELATIVE_THRESHOLD * float(np.median(self.reference_scores))
            res = self.ev.evaluate(sim.ccd, threshold=threshold)
        else:
            res = self.ev.evaluate(sim.ccd)
        return res.patch_scores, res.patch_mask


def photometric_errors(sim, pixel_mask):
    """|error| and masked flag of stars with S/N >= 20 (fixed true zero point)."""
    ccd = sim.ccd.copy()
    ccd.mask = pixel_mask
    meta = ccd.meta
    fwhm = meta["FWHMPIX"]
    beta = meta.get("PSFBETA", 2.5)
    frac = moffat_aperture_fraction(fwhm, beta, 1.5 * fwhm, 3 * fwhm, 5 * fwhm)
    zp = meta["MAGZP"] - 2.5 * np.log10(meta["GAIN"]) + 2.5 * np.log10(frac)
    cat = sim.catalog[sim.catalog["type"] == "star"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = measure_frame(
            ccd, cat, positions="catalog", fwhm=fwhm, zero_point=zp, min_matches=1, epoch=None
        )
    ok = (
        (np.asarray(t["snr"], float) >= 20)
        & ~np.asarray(t["saturated"], bool)
        & ~np.asarray(t["edge"], bool)
        & ~np.asarray(t["blended"], bool)
        & np.isfinite(np.asarray(t["error"], float))
    )
    return np.abs(np.asarray(t["error"], float)[ok]), np.asarray(t["masked"], bool)[ok]


def iou(patch_mask, truth_patch):
    pos, neg = truth_patch > POSITIVE, truth_patch < NEGATIVE
    counted = pos | neg  # ambiguous patches count for neither side
    union = ((patch_mask | pos) & counted).sum()
    return float((patch_mask & pos).sum() / union) if union else float("nan")


def stars_masked(sim, pixel_mask):
    cat = sim.catalog[sim.catalog["type"] == "star"]
    ny, nx = pixel_mask.shape
    x, y = np.rint(np.asarray(cat["x"], float)), np.rint(np.asarray(cat["y"], float))
    inside = (x >= 0) & (x < nx) & (y >= 0) & (y < ny)
    hit = pixel_mask[y[inside].astype(int), x[inside].astype(int)]
    mag = np.asarray(cat["phot_g_mean_mag"], float)[inside]
    bright = mag <= np.quantile(mag, 0.1)
    return hit, bright


def evaluate_configs(configs, frames, p, args):
    """Per config: AUROC, IoU, photometric gain per defect, clean false-mask rate, stars masked."""
    out = {}
    for cfg in configs:
        clean_scores, masked_frac, hits, hits_bright = [], [], [], []
        for sim in frames["clean"]:
            scores, pmask = cfg.score(sim, p)
            clean_scores.append(scores.ravel())
            masked_frac.append(float(pmask.mean()))
            hit, bright = stars_masked(sim, patch_mask_to_pixel_mask(pmask, p, sim.ccd.shape))
            hits.append(hit)
            hits_bright.append(hit[bright])
        clean_scores = np.concatenate(clean_scores)
        entry = {
            "clean_false_mask_rate": float(np.mean(masked_frac)),
            "stars_masked_clean": float(np.concatenate(hits).mean()),
            "bright_stars_masked_clean": float(np.concatenate(hits_bright).mean()),
            "defects": {},
        }
        for defect, sims in frames["defects"].items():
            pos, neg, ious, errs, masked = [], [], [], [], []
            for sim in sims:
                scores, pmask = cfg.score(sim, p)
                truth = patch_truth(sim.truth, p)
                pos.append(scores[truth > POSITIVE])
                neg.append(scores[truth < NEGATIVE])
                ious.append(iou(pmask, truth))
                if args.photometry:
                    e, m = photometric_errors(
                        sim, patch_mask_to_pixel_mask(pmask, p, sim.ccd.shape)
                    )
                    errs.append(e)
                    masked.append(m)
            d = {
                "auroc": auroc(np.concatenate(pos), np.concatenate([*neg, clean_scores])),
                "iou": float(np.nanmean(ious)),
            }
            if args.photometry:
                e, m = np.concatenate(errs), np.concatenate(masked)
                d["median_abs_error_all"] = float(np.median(e))
                d["median_abs_error_unmasked"] = float(np.median(e[~m])) if (~m).any() else np.nan
                d["photometric_gain"] = d["median_abs_error_all"] / d["median_abs_error_unmasked"]
                d["stars_kept"] = float((~m).mean())
            entry["defects"][defect] = d
        ds = entry["defects"].values()
        entry["mean_auroc"] = float(np.mean([d["auroc"] for d in ds]))
        entry["mean_iou"] = float(np.mean([d["iou"] for d in ds]))
        if args.photometry:
            # undefined where every star of a defect is masked (the whole frame is bad)
            entry["mean_photometric_gain"] = float(np.nanmean([d["photometric_gain"] for d in ds]))
        if cfg.ev is None:
            entry["threshold_sigma"] = cfg.sigma
        out[cfg.name] = entry
    return out


def fwhm_sweep(configs, preset, shape, p, n_fields):
    fwhms = np.array([0.7, 0.85, 1.0, 1.25, 1.5, 2.0]) * PRESETS[preset][2] / 0.7
    per = {cfg.name: [] for cfg in configs}
    for field in range(n_fields):
        sims = [simulate(preset, shape, f, 5000 + field) for f in fwhms]
        for cfg in configs:
            scores = [float(np.nanmean(cfg.score(sim, p)[0])) for sim in sims]
            per[cfg.name].append(float(spearmanr(fwhms, scores).statistic))
    return {
        name: {"per_field": v, "min": min(v), "median": float(np.median(v))}
        for name, v in per.items()
    }


def fpr_section(ev, calibration, tests, fprs, *, test_name="fixed_fwhm", n_boot=500):
    """Measured false-mask rate on clean frames against the requested fpr (the defaults).

    The patches of one frame share its seeing, so exceedances cluster by
    frame: the 68 % interval of each clean-frame rate comes from resampling
    the calibration and the test frames (bootstrap, ``n_boot`` draws).
    """
    defaults = AEQualityEvaluator()
    for key in ("aggregate", "star_aware", "psf_term", "morphology"):
        setattr(ev, key, getattr(defaults, key))
    rng = np.random.default_rng(1)
    rows = []
    for source in ("held_out", "clean_frames"):
        if source == "held_out":
            reference = ev.reference_scores_held_out
            # as fit left them: a calibrate() of another section re-measures the FWHM
            ev.psf_calibration_ = ev.psf_calibration_held_out
            ev.reference_fwhm_ = ev.reference_fwhm_held_out
            n_reference = int(np.size(reference))
        else:
            ev.calibrate([s.ccd for s in calibration], progress_bar=False)
            reference = ev.reference_scores_.copy()
            n_reference = int(ev.n_reference_)
            # the calibration frames' own scores, frame by frame, to resample
            cal_frames = [ev.evaluate(s.ccd).patch_scores.ravel() for s in calibration]
        per_frame = [ev.evaluate(s.ccd).patch_scores for s in tests]
        scores = np.concatenate([f.ravel() for f in per_frame])
        for fpr in fprs:
            row = {"calibration": source, "test": test_name, "n_reference": n_reference, "fpr": fpr}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # too few references: inf, reported as such
                thr = conformal_threshold(reference, fpr)
            row["threshold"] = thr if np.isfinite(thr) else None
            row["n_test_patches"] = int(scores.size)
            row["patch_exceedance"] = float(np.mean(scores > thr))
            for morph in ((1, 1), (0, 1)):
                rate = np.mean([mask_of(f, thr, f.shape, 1, morph)[0].mean() for f in per_frame])
                row[f"mask_rate_morphology_{morph[0]}{morph[1]}"] = float(rate)
            row["test_frames_with_exceedances"] = int(sum((f > thr).any() for f in per_frame))
            if source == "clean_frames":
                rates = []
                for _ in range(n_boot):
                    cal = np.concatenate(
                        [cal_frames[i] for i in rng.integers(0, len(cal_frames), len(cal_frames))]
                    )
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        t = conformal_threshold(cal[np.isfinite(cal)], fpr)
                    test = [per_frame[i] for i in rng.integers(0, len(per_frame), len(per_frame))]
                    rates.append(np.mean([np.mean(f > t) for f in test]))
                row["patch_exceedance_68"] = [float(q) for q in np.quantile(rates, [0.16, 0.84])]
            rows.append(row)
    return rows


def print_table(results):
    for preset, res in results["presets"].items():
        if "configs" not in res:
            continue
        print(f"\n== {preset}  (patch {res['patch_size']} px)")
        names = list(res["configs"])
        defects = list(next(iter(res["configs"].values()))["defects"])
        print(f"{'defect':<12}" + "".join(f"{n:>24}" for n in names))
        print(f"{'':<12}" + "".join(f"{'AUROC  IoU  gain':>24}" for _ in names))
        for d in defects:
            row = f"{d:<12}"
            for n in names:
                e = res["configs"][n]["defects"][d]
                row += (
                    f"{e['auroc']:>10.3f}{e['iou']:>7.2f}{e.get('photometric_gain', np.nan):>7.2f}"
                )
            print(row)
        for key in ("mean_auroc", "mean_iou", "mean_photometric_gain", "clean_false_mask_rate",
                    "stars_masked_clean", "bright_stars_masked_clean"):  # fmt: skip
            print(
                f"{key:<12}"
                + "".join(f"{res['configs'][n].get(key, np.nan):>24.4f}" for n in names)
            )
        if "fwhm" in res:
            print(
                f"{'FWHM rho min':<12}" + "".join(f"{res['fwhm'][n]['min']:>24.3f}" for n in names)
            )
    for preset, rows in results.get("fpr", {}).items():
        print(f"\n== fpr calibration, {preset}")
        for r in rows:
            interval = r.get("patch_exceedance_68")
            print(
                f"{r['test']:>12} {r['calibration']:>13} n_ref={r['n_reference']:>6} fpr={r['fpr']:<6} "
                f"exceed={r['patch_exceedance']:.4f}"
                + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")
                + f" in {r['test_frames_with_exceedances']} frames masked(open 1)="
                f"{r['mask_rate_morphology_11']:.4f} masked(open 0)={r['mask_rate_morphology_01']:.4f}"
            )
    for preset, rows in results.get("patch", {}).items():
        print(f"\n== patch size, {preset}")
        for r in rows:
            print(
                f"  p={r['patch_size']:>3} FWHM x {r['fwhm_multiple']:.1f}: "
                f"mean AUROC {r['mean_auroc']:.3f}, IoU {r['mean_iou']:.3f}"
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and smaller frames")
    parser.add_argument("--output-dir", default="benchmarks/results")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument(
        "--classical-sigma",
        type=float,
        default=None,
        help="classical threshold in sigma (default: its clean-frame 99th percentile)",
    )
    parser.add_argument(
        "--reuse-models", action="store_true", help="load the models of a former run"
    )
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--sections", nargs="+", default=["main", "fwhm", "fpr", "patch"])
    parser.add_argument("--no-photometry", dest="photometry", action="store_false")
    parser.add_argument("--configs", nargs="+", default=None, help="only these configurations")
    args = parser.parse_args(argv)
    # the too-few-references warnings of the fpr section are reported in its table
    logging.getLogger("astro_aeqa").setLevel(logging.ERROR)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    shape = (256, 256) if quick else (512, 512)
    args.n_epochs, args.steps = (3, 30) if quick else (10, 50)
    n_refs, n_clean, n_seeds = (4, 3, 1) if quick else (8, 6, 2)
    t0 = time.perf_counter()
    results = {"config": vars(args), "shape": shape, "presets": {}, "fpr": {}, "patch": {}}
    p = args.patch_size

    for preset in args.presets:
        _, (f_lo, f_hi), f_test = PRESETS[preset]
        rng = np.random.default_rng(0)
        refs = [
            simulate(preset, shape, rng.uniform(f_lo, f_hi), 1000 + i).ccd for i in range(n_refs)
        ]
        # clean frames of the survey to calibrate on: >= 499 patches for fpr=0.002
        calib = [
            simulate(preset, (512, 512), rng.uniform(f_lo, f_hi), 2000 + i)
            for i in range(2 * n_clean)
        ]
        ours = train(preset, "noise", refs, args, out_dir)
        ours.reference_scores_held_out = ours.reference_scores_.copy()
        ours.psf_calibration_held_out = ours.psf_calibration_
        if ours.reference_fwhm_ is None:  # a model file from before the FWHM was stored
            ours.reference_fwhm_ = float(np.median([measure_fwhm(r.data) for r in refs[:5]]))
        ours.reference_fwhm_held_out = ours.reference_fwhm_
        paper = train(preset, "minmax", refs, args, out_dir)
        print(f"{preset}: trained, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        frames = {
            "clean": [simulate(preset, shape, f_test, 7000 + i) for i in range(n_clean)],
            "defects": {
                d: [simulate(preset, shape, f_test, 9000 + 31 * i, **kw) for i in range(n_seeds)]
                for d, kw in DEFECTS.items()
            },
        }
        trimmed = {"aggregate": "trimmed_mean"}
        stars = {"aggregate": "trimmed_mean", "star_aware": True}
        default = {**stars, "psf_term": True, "morphology": (0, 1)}
        configs = [
            Config("paper", paper),
            # ablations: one feature of the default at a time
            Config("ours_mean", ours),
            Config("ours_trimmed", ours, **trimmed),
            Config("ours_median", ours, aggregate="median"),
            Config("ours_tr_open0", ours, **trimmed, morphology=(0, 1)),
            Config("ours_tr_stars", ours, **stars),
            Config("ours_tr_stars_open0", ours, **stars, morphology=(0, 1)),
            Config("ours_mean_psf_open0", ours, psf_term=True, morphology=(0, 1)),
            Config("ours_fpr0.01", ours, **default, fpr=0.01),
            Config("ours", ours, **default),
            Config("classical", sigma=args.classical_sigma),
        ]
        configs[-1].patch_size = p
        if args.configs:
            configs = [c for c in configs if c.name in args.configs]
        res = {"patch_size": p, "reference_fwhm_pixels": ours.reference_fwhm_}
        if "main" in args.sections:
            for cfg in configs:
                cfg.calibrate(calib)
            res["configs"] = evaluate_configs(configs, frames, p, args)
            print(f"{preset}: configs, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if "fwhm" in args.sections and "main" in args.sections:
            res["fwhm"] = fwhm_sweep(configs, preset, shape, p, 2 if quick else 4)
            print(f"{preset}: fwhm, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        results["presets"][preset] = res
        if "fpr" in args.sections:
            big = (512, 512) if quick else (1024, 1024)
            # 40 frames: 10,240 patches, so fpr=0.001 expects 10 exceedances, not 2.6
            n_big = 4 if quick else 40
            # Seeing on one evenly spaced grid for the calibration and the matched
            # test frames: scores rank frames by seeing, and two random draws of
            # 40 seeings differ enough to move the measured rate by 1.5x.
            seeing = f_lo + (f_hi - f_lo) * (np.arange(n_big) + 0.5) / n_big
            fcal = [simulate(preset, big, f, 3000 + i) for i, f in enumerate(seeing)]
            ftest = [simulate(preset, big, f_test, 4000 + i) for i in range(n_big)]
            fprs = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05]
            results["fpr"][preset] = fpr_section(ours, fcal, ftest, fprs)
            # test frames whose seeing is drawn like the calibration frames': exchangeable
            fmatch = [simulate(preset, big, f, 6000 + i) for i, f in enumerate(seeing)]
            results["fpr"][preset] += fpr_section(
                ours, fcal, fmatch, fprs, test_name="matched_fwhm"
            )
            print(f"{preset}: fpr, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if "patch" in args.sections:
            rows = []
            # 12 calibration frames hold 192 patches of 128 px: too few for
            # fpr=0.005 (199), so the curve's masks use 0.01
            cfg = Config("ours", ours, **default, fpr=0.01)
            for size in (16, 24, 32, 48, 64, 96, 128):
                if size > shape[0] // 2:
                    continue
                ours.patch_size = size
                cfg.calibrate(calib)
                r = evaluate_configs([cfg], frames, size, argparse.Namespace(photometry=False))
                rows.append(
                    {
                        "patch_size": size,
                        "fwhm_multiple": size / res["reference_fwhm_pixels"],
                        "mean_auroc": r["ours"]["mean_auroc"],
                        "mean_iou": r["ours"]["mean_iou"],
                        "defects": r["ours"]["defects"],
                        "clean_false_mask_rate": r["ours"]["clean_false_mask_rate"],
                    }
                )
            ours.patch_size = p
            results["patch"][preset] = rows
            print(f"{preset}: patch sizes, {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    results["seconds"] = time.perf_counter() - t0
    name = "quality_quick.json" if quick else "quality.json"
    if args.sections != ["main", "fwhm", "fpr", "patch"]:
        name = name.replace(".json", "_" + "_".join(args.sections) + ".json")
    (out_dir / name).write_text(json.dumps(results, indent=1, default=float))
    print_table(results)
    print(f"\n{results['seconds']:.0f} s; JSON in {out_dir / name}")


if __name__ == "__main__":
    main()
