# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Quality beyond our own simulator: scenes it did not make, real frames with
defects injected, and real frames of cameras the model never saw.

Run from the repository root (about 5 minutes on two cores)::

    flock /tmp/aeqa_cpu.lock python benchmarks/real.py

Sections:

``scenes``
    Independent scenes (``benchmarks/_scenes.py``): large smooth clouds that
    brighten or only dim (50-95 % cover), Moon gradients and clean frames,
    1024x1024. The shipped model zero-shot and after ``calibrate`` on two
    clean frames of the same generator, against the photutils
    ``Background2D`` mesh score. Patch AUROC (truth > 0.2 against < 0.02),
    the fraction of clean patches (truth < 0.02) masked on defect frames (for
    clouds that brighten also of the patches whose scattered light is under
    5 % of the sky: a cover of 2 % brings up to 50 %), and the fraction of
    clean frames masked.
``m13``
    Real raw frames of one camera (``m13_raw_series``): calibrate on two,
    inject clouds and the Moon into the other three.
``zero_shot``
    Real clean frames of cameras the model never saw (M13, SDSS g/r/i,
    all-sky): the fraction masked and whether a warning named ``calibrate``.
``allsky``
    Real all-sky cameras: calibrate on clear frames, score cloudy ones; the
    fraction masked inside the footprint.

The real frames are found in ``shared/data/real`` beside the checkout.
Results go to ``benchmarks/results/real.json``.
"""

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData

sys.path.insert(0, str(Path(__file__).parent))
from _scenes import SCATTER, inject, scene  # noqa: E402
from evaluator_quality import auroc, classical_patch_scores, patch_truth  # noqa: E402

from astro_aeqa import AEQualityEvaluator  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
POSITIVE, NEGATIVE = 0.2, 0.02


def evaluate(ev, image):
    """Evaluate, catching the zero-shot warning; returns the result and whether it warned."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ev.evaluate(image)
    warned = any("calibrate" in str(w.message) for w in caught)
    return res, warned


def masked_fraction(res):
    """Fraction of the footprint's pixels masked."""
    inside = np.ones(res.shape, bool) if res.footprint is None else res.footprint
    return float(res.mask[inside].mean())


def defect_metrics(results, truths, p):
    pos, neg, clean_masked = [], [], []
    for scores, masked, truth in zip(*results, truths, strict=True):
        t = patch_truth(truth, p)
        pos.append(scores[t > POSITIVE])
        neg.append(scores[t < NEGATIVE])
        if masked is not None:
            clean_masked.append(masked[t < NEGATIVE])
    out = {"auroc": auroc(np.concatenate(pos), np.concatenate(neg))}
    if clean_masked:
        out["clean_patches_masked"] = float(np.concatenate(clean_masked).mean())
    return out


def scenes_section(ev0, args):
    p = ev0.patch_size
    cal = AEQualityEvaluator.pretrained(device="cpu")
    cal.calibrate([scene("clean", seed=100 + i)[0] for i in range(2)], progress_bar=False)
    covers = {"moon": [None] * 3}
    frames = {}
    for kind in ("cloud_bright", "cloud_dim", "cloud_dim_stars", "moon"):
        frames[kind] = [
            scene(kind, seed=10 * i + 1, cover=c or 0.8)
            for i, c in enumerate(covers.get(kind, [0.5, 0.8, 0.95]))
        ]
    clean = [scene("clean", seed=200 + i)[0] for i in range(3)]
    out = {}
    for name, ev in (("zero_shot", ev0), ("calibrated", cal)):
        out[name] = {}
        for kind, items in frames.items():
            scores, masks = [], []
            for ccd, _ in items:
                res, _ = evaluate(ev, ccd)
                scores.append(res.patch_scores)
                masks.append(res.patch_mask)
            out[name][kind] = defect_metrics((scores, masks), [t for _, t in items], p)
            if kind == "cloud_bright":  # clean by light: scattered light under 5 % of the sky
                light = [patch_truth(SCATTER * t, p) < 0.05 for _, t in items]
                out[name][kind]["clean_by_light_masked"] = float(
                    np.concatenate([m[c] for m, c in zip(masks, light, strict=True)]).mean()
                )
        out[name]["clean_frames_masked"] = float(
            np.mean([masked_fraction(evaluate(ev, c)[0]) for c in clean])
        )
    out["Background2D"] = {
        kind: defect_metrics(
            ([classical_patch_scores(c.data, p) for c, _ in items], [None] * len(items)),
            [t for _, t in items],
            p,
        )
        for kind, items in frames.items()
    }
    return out


def read(path, hdu=0):
    with fits.open(path) as hdul:
        data = hdul[hdu].data
        header = hdul[hdu].header.copy()
    if data.ndim == 3:
        data = data[0]
    return CCDData(data.astype(np.float32), unit="adu", meta=header)


def m13_section(ev0):
    files = sorted((REAL / "m13_raw_series").glob("*.fits.bz2"))
    frames = [read(f) for f in files]
    p = ev0.patch_size
    cal = AEQualityEvaluator.pretrained(device="cpu")
    cal.calibrate(frames[:2], progress_bar=False)
    out = {}
    for name, ev in (("zero_shot", ev0), ("calibrated", cal)):
        out[name] = {}
        for kind in ("cloud_bright", "cloud_dim", "cloud_dim_stars", "moon"):
            scores, masks, truths = [], [], []
            for i, ccd in enumerate(frames[2:]):
                data, truth = inject(ccd.data, kind, seed=i, cover=0.8)
                res, _ = evaluate(ev, CCDData(data, unit="adu", meta=ccd.meta))
                scores.append(res.patch_scores)
                masks.append(res.patch_mask)
                truths.append(truth)
            out[name][kind] = defect_metrics((scores, masks), truths, p)
        out[name]["clean_frames_masked"] = float(
            np.mean([masked_fraction(evaluate(ev, c)[0]) for c in frames[2:]])
        )
    return out


def zero_shot_section(ev0):
    cases = {
        **{f.name: f for f in sorted((REAL / "m13_raw_series").glob("*.fits.bz2"))},
        **{f.name: f for f in sorted((REAL / "sdss_reprojected").glob("*.fits.bz2"))},
        **{f.name: f for f in sorted((REAL / "allsky_pyasc_2015").glob("*.fits.bz2"))[:3]},
        "iceact_images_starry.fits": REAL / "allsky_tudo" / "iceact_images_starry.fits",
    }
    out = {}
    for name, path in cases.items():
        res, warned = evaluate(ev0, read(path))
        out[name] = {
            "masked": masked_fraction(res),
            "warned": warned,
            "method": res.threshold_method,
            "footprint": 1.0 if res.footprint is None else float(res.footprint.mean()),
        }
    return out


def allsky_section():
    tudo = REAL / "allsky_tudo"
    pyasc = sorted((REAL / "allsky_pyasc_2015").glob("*.fits.bz2"))
    sets = {
        # camera: (clear calibration frames, {test frame: label})
        "IceAct": (
            [tudo / "iceact_images_starry.fits"],
            {"iceact_images_cloudy.fits": "cloudy", "iceact_images_starry.fits": "clear"},
        ),
        "pyasc": (pyasc[:2], {f.name: "clear" for f in pyasc[2:]}),
        # labelled by eye: 2018-08-16 21:01 has the Moon in the field and a
        # moonlit sky; the two frames of the next night are clear (Milky Way)
        "MAGIC": (
            [tudo / "magic_images_20180817_0055.fits", tudo / "magic_images_20180817_0341.fits"],
            {
                "magic_images_20180816_2101.fits": "moonlit",
                "magic_images_20180817_0055.fits": "clear",
                "magic_images_20180817_0341.fits": "clear",
            },
        ),
    }
    out = {}
    for camera, (calibration, tests) in sets.items():
        ev = AEQualityEvaluator.pretrained(device="cpu")
        ev.calibrate([read(f) for f in calibration], progress_bar=False)
        out[camera] = {}
        for name, label in tests.items():
            path = REAL / "allsky_pyasc_2015" / name if camera == "pyasc" else tudo / name
            res, warned = evaluate(ev, read(path))
            out[camera][name] = {
                "label": label,
                "masked_in_footprint": masked_fraction(res),
                "footprint": 1.0 if res.footprint is None else float(res.footprint.mean()),
            }
    return out


def main():
    t0 = time.time()
    ev0 = AEQualityEvaluator.pretrained(device="cpu")
    results = {"scenes": scenes_section(ev0, None)}
    print(json.dumps(results["scenes"], indent=1))
    if REAL.is_dir():
        results["m13"] = m13_section(ev0)
        print(json.dumps(results["m13"], indent=1))
        results["zero_shot"] = zero_shot_section(ev0)
        print(json.dumps(results["zero_shot"], indent=1))
        results["allsky"] = allsky_section()
        print(json.dumps(results["allsky"], indent=1))
    else:
        print(f"{REAL} not found: real-data sections skipped")
    results["seconds"] = time.time() - t0
    out = Path(__file__).parent / "results" / "real.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out} in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
