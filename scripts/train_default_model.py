# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Train the pretrained ``small`` model shipped in the wheel.

Run from the repository root (about 10 minutes on a 2-core laptop CPU)::

    python scripts/train_default_model.py [--output astro_aeqa/data/aeqa_small_default.safetensors]

The training set is clean simulated frames only, spanning the cameras users
have: both instrument presets (``PAPER_2P5M``, ``GWAC_LIKE``), pixel scales
from 0.2 to 15 arcsec/pixel (log-uniform), a Moffat or Gaussian PSF with a
FWHM of 1.5-4 pixels, sky levels from 30 to 20,000 electrons per pixel and
star densities from 0.3 to 3 times the default. Each frame is drawn from its
own seed, so the set, the training and the calibration are reproducible: on
the same torch version and thread count the output file is bit-identical
(the script prints its SHA-256). Another 24 clean frames of the same mix,
never trained on, calibrate the false-mask rate.

``--recalibrate`` keeps the weights of ``--output`` and only calibrates it
again (about a minute), for a change of the scoring defaults. The shipped
model carries no PSF-term scale: its clean frames mix many cameras and
seeings, so the reference PSF must come from your survey
(``AEQualityEvaluator.calibrate`` or ``fit`` on its clean frames).
"""

import argparse
import time

import numpy as np
from astropy import units as u

from astro_aeqa import AEQualityEvaluator
from astro_aeqa.simulation import GWAC_LIKE, PAPER_2P5M, simulate_image
from astro_aeqa.utils import file_sha256

N_FRAMES = 48
N_CALIBRATION = 24
SHAPE = (512, 512)
SEED = 20241125


def camera(rng):
    """Draw one camera and observing condition; return simulate_image kwargs and a summary."""
    base = PAPER_2P5M if rng.random() < 0.5 else GWAC_LIKE
    scale = float(np.exp(rng.uniform(np.log(0.2), np.log(15.0))))
    fwhm_pix = float(rng.uniform(1.5, 4.0))
    sky_e = float(np.exp(rng.uniform(np.log(30.0), np.log(20000.0))))
    instrument = base.replace(
        pixel_scale=scale * u.arcsec / u.pix, typical_fwhm=fwhm_pix * scale * u.arcsec
    )
    # The exposure sets the sky level (electrons per pixel) for this pixel scale.
    exposure = sky_e / instrument.sky_electrons_per_pixel() * instrument.exposure_time.to_value(u.s)
    instrument = instrument.replace(exposure_time=exposure * u.s)
    density = 1.2e-3 * float(np.exp(rng.uniform(np.log(0.3), np.log(3.0))))
    kwargs = {
        "instrument": instrument,
        "fwhm": fwhm_pix * scale * u.arcsec,
        "psf": "moffat" if rng.random() < 0.7 else "gaussian",
        "n_stars": int(density * SHAPE[0] * SHAPE[1]),
    }
    summary = {
        "preset": base.name,
        "pixel_scale": round(scale, 3),
        "fwhm_pix": round(fwhm_pix, 2),
        "sky_e": round(sky_e, 1),
        "n_stars": kwargs["n_stars"],
        "psf": kwargs["psf"],
    }
    return kwargs, summary


def training_frames(n_frames=N_FRAMES, seed=SEED):
    """Clean frames of the camera mix and a one-line summary of each."""
    rng = np.random.default_rng(seed)
    frames, summaries = [], []
    for i in range(n_frames):
        kwargs, summary = camera(rng)
        frames.append(simulate_image(SHAPE, seed=seed + i, **kwargs).ccd)
        summaries.append(summary)
    return frames, summaries


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="astro_aeqa/data/aeqa_small_default.safetensors")
    parser.add_argument("--n-frames", type=int, default=N_FRAMES)
    parser.add_argument("--n-calibration", type=int, default=N_CALIBRATION)
    parser.add_argument("--n-epochs", type=int, default=80)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--recalibrate", action="store_true", help="keep the weights of --output, calibrate again"
    )
    args = parser.parse_args(argv)
    if args.recalibrate:
        recalibrate(args)
        return

    t0 = time.perf_counter()
    frames, summaries = training_frames(args.n_frames)
    calibration, _ = training_frames(args.n_calibration, seed=SEED + 10_000)
    print(
        f"simulated {len(frames)} + {len(calibration)} clean frames in {time.perf_counter() - t0:.0f} s"
    )
    scales = [s["pixel_scale"] for s in summaries]
    print(f"pixel scales {min(scales):.2f}-{max(scales):.2f} arcsec/pix")

    ev = AEQualityEvaluator("small", device="cpu", seed=0)
    ev.fit(
        frames,
        n_epochs=args.n_epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=16,
        calibration=calibration,
        progress_bar=not args.quiet,
    )
    ev.training_["dataset"] = {
        "description": "clean simulated frames (astro_aeqa.simulation), scripts/train_default_model.py",
        "n_frames": len(frames),
        "n_calibration_frames": len(calibration),
        "shape": list(SHAPE),
        "seed": SEED,
        "presets": ["PAPER_2P5M", "GWAC_LIKE"],
        "pixel_scale_arcsec": [0.2, 15.0],
        "fwhm_pix": [1.5, 4.0],
        "sky_electrons_per_pixel": [30.0, 20000.0],
        "star_density_factor": [0.3, 3.0],
    }
    calibrate_and_save(ev, calibration, args.output)
    print(f"wrote {args.output} in {time.perf_counter() - t0:.0f} s")


def calibrate_and_save(ev, calibration, path):
    """Calibrate with the scoring defaults, without a PSF-term scale (see above); save."""
    ev.fpr = AEQualityEvaluator(device="cpu").fpr
    ev.psf_term = False  # the reference scores are then the MAE scores
    ev.calibrate(calibration, progress_bar=False)
    ev.psf_term = True  # in use once calibrate() on a survey's frames sets its scale
    ev.save(path, overwrite=True)
    print(f"sha256 {file_sha256(path)}")


def recalibrate(args):
    t0 = time.perf_counter()
    calibration, _ = training_frames(args.n_calibration, seed=SEED + 10_000)
    ev = AEQualityEvaluator.load(args.output, device="cpu")
    defaults = AEQualityEvaluator(device="cpu")
    for key in ("aggregate", "star_aware", "morphology"):
        setattr(ev, key, getattr(defaults, key))
    calibrate_and_save(ev, calibration, args.output)
    print(f"recalibrated {args.output} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
