# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Make the four figures of docs/validation.rst (paper Figs. 7, 9, 10, 11) on simulated data.

The sequence is the one of ``benchmarks/validation.py`` (`sequence_tables`) on
smaller frames. Masks and scores come from ``--mask-source``: ``evaluator``
(with ``--model``), ``truth`` (mask = truth > 0.1, score = per-patch mean of
the truth map) or ``proxy`` (the truth-free background-RMS score). Run from
the repository root, for example::

    python docs/_scripts/make_validation_figures.py --mask-source evaluator \\
        --model benchmarks/results/benchmark_model.safetensors --overwrite
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from validation import (  # noqa: E402  (benchmarks/validation.py)
    select_mask_source,
    sequence_tables,
)

from astro_aeqa.utils import atomic_write  # noqa: E402
from astro_aeqa.validation import (  # noqa: E402
    error_vs_score,
    light_curve_study,
    mask_ratio_study,
    masked_vs_unmasked,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-frames", type=int, default=50)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--mask-source", choices=["evaluator", "truth", "proxy"], default="truth")
    parser.add_argument("--model", default=None, help="model file (with --mask-source evaluator)")
    parser.add_argument("--snr-min", type=float, default=20.0)
    parser.add_argument("--snr-min-curve", type=float, default=100.0)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "figures"))
    parser.add_argument("--overwrite", action="store_true", help="replace existing figures")
    args = parser.parse_args(argv)
    source = select_mask_source(args.mask_source, args.model, parser)
    tables, n_retry = sequence_tables(
        args.n_frames,
        shape=(args.size, args.size),
        seed=11,
        mask_source=source,
        threshold=0.1 if args.mask_source == "truth" else 1.3,
        n_stars=int(600 * (args.size / 512) ** 2),
        cloud_speed=(0.0, 10.0),
    )
    print(f"{len(tables)} frames, {n_retry} with the sequence zero point")
    out = Path(args.out)
    for stem, func, kw in (
        ("error_vs_score", error_vs_score, {"snr_min": args.snr_min_curve}),
        ("masked_vs_unmasked", masked_vs_unmasked, {"snr_min": args.snr_min}),
        ("mask_ratio", mask_ratio_study, {"snr_min": args.snr_min}),
        ("light_curves", light_curve_study, {"snr_min": args.snr_min, "min_frames": 10}),
    ):
        table, fig = func(tables, **kw)
        path = out / f"validation_{stem}.png"
        with atomic_write(path, overwrite=args.overwrite) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        print(path, path.stat().st_size, "bytes")
        print(table if len(table) < 20 else table[:5])
        for key in ("ratio", "mean_improvement", "rms_reduction", "monotonic"):
            if key in table.meta:
                print(f"  {key} = {table.meta[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
