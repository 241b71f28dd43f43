# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Make ``docs/figures/evaluator_score_map.png``: a cloudy simulated frame with
its AEQA mask, its patch score map and the score histogram.

Run from the repository root::

    python docs/_scripts/make_evaluator_figure.py [--model benchmarks/results/benchmark_model.safetensors]

Without ``--model`` a ``small`` evaluator is trained on ten clean frames first
(a few minutes on a laptop CPU).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from astropy import units as u  # noqa: E402

from astro_aeqa import AEQualityEvaluator  # noqa: E402
from astro_aeqa.simulation import PAPER_2P5M, simulate_image  # noqa: E402

OUT = Path(__file__).parents[1] / "figures" / "evaluator_score_map.png"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    if args.model:
        ev = AEQualityEvaluator.load(args.model, device="cpu")
    else:
        rng = np.random.default_rng(0)
        refs = [
            simulate_image(
                shape=(512, 512),
                instrument=PAPER_2P5M,
                fwhm=rng.uniform(0.5, 0.8) * u.arcsec,
                seed=1000 + i,
            ).ccd
            for i in range(10)
        ]
        ev = AEQualityEvaluator("small", patch_size=64, device="cpu", seed=0)
        ev.fit(refs, n_epochs=10, steps_per_epoch=50, progress_bar=True)
    sim = simulate_image(
        shape=(512, 512),
        instrument=PAPER_2P5M,
        fwhm=0.65 * u.arcsec,
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
    print(OUT)


if __name__ == "__main__":
    main()
