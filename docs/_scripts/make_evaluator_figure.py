# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Make ``docs/figures/evaluator_score_map.png``: a cloudy simulated frame with
its AEQA mask, its patch score map and the score histogram.

Run from the repository root (well under a minute)::

    python docs/_scripts/make_evaluator_figure.py [--model PATH]

The evaluator is the one of the getting-started page, with the current
defaults: the shipped ``small`` model (or ``--model``) calibrated on two
clean frames of the camera, so that patches are judged against the camera's
clean sky, and the default false-mask rate.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from astropy import units as u  # noqa: E402

from astro_aeqa import AEQualityEvaluator  # noqa: E402
from astro_aeqa.simulation import PAPER_2P5M, simulate_image  # noqa: E402

OUT = Path(__file__).parents[1] / "figures" / "evaluator_score_map.png"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    ev = (
        AEQualityEvaluator.load(args.model, device="cpu")
        if args.model
        else AEQualityEvaluator.pretrained(device="cpu")
    )
    clean = [
        simulate_image((512, 512), instrument=PAPER_2P5M, fwhm=0.7 * u.arcsec, seed=seed).ccd
        for seed in (1, 2)
    ]
    ev.calibrate(clean, progress_bar=False)
    sim = simulate_image(
        shape=(512, 512),
        instrument=PAPER_2P5M,
        fwhm=0.7 * u.arcsec,
        background="cloud",
        level=0.8,
        cloud_threshold=0.4,
        seed=2024,
    )
    res = ev.evaluate(sim.ccd)
    fig = res.plot(sim.ccd.data, figsize=(12, 4))
    fig.axes[0].contour(
        sim.truth, levels=[0.2], colors="tab:cyan", linewidths=0.8, linestyles="dashed"
    )
    fig.axes[0].set_title("mask (red), cloud truth > 0.2 (cyan)")
    fig.savefig(OUT, dpi=80)
    print(OUT, f"fpr {res.fpr}, threshold {res.threshold:.3f}, masked {res.masked_fraction:.3f}")


if __name__ == "__main__":
    main()
