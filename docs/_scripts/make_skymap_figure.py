# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Make ``docs/figures/skymap.png``: the sky quality map of a simulated night,
nine overlapping 512x512 frames on a 3x3 grid of pointings, the three of the
eastern column and the middle of the top row taken through clouds.

The frames are masked with `astro_aeqa.parallel.score_files` and combined
with `astro_aeqa.skymap.sky_quality_map`. Run from the repository root::

    python docs/_scripts/make_skymap_figure.py [--model PATH] [--n-workers 2]

The model defaults to the shipped ``small`` model with the current defaults,
calibrated on four clean frames of the camera (under a minute in all).
"""

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from astropy import units as u  # noqa: E402
from astropy.coordinates import SkyCoord  # noqa: E402

from astro_aeqa import AEQualityEvaluator  # noqa: E402
from astro_aeqa.parallel import score_files  # noqa: E402
from astro_aeqa.simulation import PAPER_2P5M, simulate_image  # noqa: E402
from astro_aeqa.skymap import plot_sky_quality_map, sky_quality_map  # noqa: E402

ROOT = Path(__file__).parents[2]
OUT = ROOT / "docs" / "figures" / "skymap.png"
SIZE = 512
CLOUDY = {(0, 2), (1, 2), (2, 2), (2, 1)}  # (row, column); row 2 is the top


def _shipped_model(path):
    """The shipped model calibrated on four clean frames of the camera, saved to ``path``."""
    clean = [
        simulate_image((SIZE, SIZE), instrument=PAPER_2P5M, seed=1000 + i).ccd for i in range(4)
    ]
    ev = AEQualityEvaluator.pretrained(device="cpu")
    ev.calibrate(clean, progress_bar=False)
    return ev.save(path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--n-workers", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or _shipped_model(tmp / "small.aeqa.safetensors")
        centre = SkyCoord(150.1 * u.deg, 2.2 * u.deg)
        step = 0.75 * SIZE * u.pix * PAPER_2P5M.pixel_scale  # frames overlap by a quarter
        paths = []
        for row in range(3):
            for col in range(3):
                offset = ((col - 1) * step, (row - 1) * step)
                pointing = centre.spherical_offsets_by(*offset)
                cloudy = (row, col) in CLOUDY
                sim = simulate_image(
                    (SIZE, SIZE),
                    instrument=PAPER_2P5M,
                    background="cloud" if cloudy else None,
                    level=0.8,
                    pointing=pointing,
                    seed=10 * row + col,
                )
                path = tmp / f"frame_r{row}c{col}.fits"
                sim.write(path)
                paths.append(path)
        scheduler = None if args.n_workers else "synchronous"
        table = score_files(
            paths,
            model,
            output_dir=tmp / "masked",
            write_masks=True,
            scheduler=scheduler,
            n_workers=args.n_workers,
        )
        print(table["file", "score", "masked_fraction", "status"])
        skymap = sky_quality_map(sorted((tmp / "masked").glob("*_aeqa.fits")))
        fig = plot_sky_quality_map(
            skymap,
            path=OUT,
            overwrite=True,
            title="Sky quality map of nine simulated frames (mean patch score)",
        )
        print(f"map {skymap.shape}, {np.mean(~skymap.mask):.0%} covered; wrote {OUT}")
        fig.clf()


if __name__ == "__main__":
    main()
