# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Make the four figures of docs/validation.rst (paper Figs. 7, 9, 10, 11) on simulated data.

Masks and scores come from the simulator's truth (mask = truth > 0.1, score =
per-patch mean of the truth map) until the evaluator exists; pass
``--mask-source proxy`` for the truth-free background-RMS score instead.
Run from the repository root: ``python docs/_scripts/make_validation_figures.py``.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from astropy import units as u

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from validation import mask_source_proxy, mask_source_truth  # noqa: E402  (benchmarks/validation.py)

from astro_aeqa.exceptions import CatalogError  # noqa: E402
from astro_aeqa.simulation import PAPER_2P5M, simulate_sequence  # noqa: E402
from astro_aeqa.validation import (
    error_vs_score,
    light_curve_study,
    mask_ratio_study,  # noqa: E402
    masked_vs_unmasked,
    measure_frame,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-frames", type=int, default=50)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--mask-source", choices=["truth", "proxy"], default="truth")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "figures"))
    args = parser.parse_args(argv)
    source = mask_source_truth if args.mask_source == "truth" else mask_source_proxy
    threshold = 0.1 if args.mask_source == "truth" else 1.3
    n = args.n_frames
    frames = simulate_sequence(
        n,
        shape=(args.size, args.size),
        instrument=PAPER_2P5M,
        fwhm=0.7 * u.arcsec,
        seed=11,
        level=0.8 * np.sin(np.pi * np.arange(n) / (n - 1)) ** 2,
        cloud_threshold=0.4,
        cloud_speed=(0.0, 10.0),
        n_stars=250,
    )
    tables = []
    for i, sim in enumerate(frames):
        mask, smap = source(sim, patch_size=64, threshold=threshold)
        ccd = sim.ccd.copy()
        ccd.mask = mask
        cat = sim.catalog[sim.catalog["type"] == "star"]
        cat["source_id"] = np.arange(len(cat))
        try:
            tables.append(
                measure_frame(
                    ccd,
                    cat,
                    score_map=smap,
                    positions="catalog",
                    fwhm=ccd.meta["FWHMPIX"],
                    min_matches=5,
                    name=f"frame {i}",
                )
            )
        except CatalogError as exc:
            print(f"frame {i} skipped: {exc}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stem, func, kw in (
        ("error_vs_score", error_vs_score, {"snr_min": 20}),
        ("masked_vs_unmasked", masked_vs_unmasked, {"snr_min": 20}),
        ("mask_ratio", mask_ratio_study, {"snr_min": 20}),
        ("light_curves", light_curve_study, {"snr_min": 20, "min_frames": 10}),
    ):
        table, fig = func(tables, **kw)
        path = out / f"validation_{stem}.png"
        fig.savefig(path, dpi=80)
        print(path, path.stat().st_size, "bytes")
        print(table if len(table) < 20 else table[:5])
        for key in ("ratio", "mean_improvement", "rms_reduction"):
            if key in table.meta:
                print(f"  {key} = {table.meta[key]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
