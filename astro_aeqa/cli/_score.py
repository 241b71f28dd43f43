# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``aeqa score``: score frames and write the ``scores.ecsv`` table."""

import logging
from pathlib import Path

from ._inputs import (
    SUMMARY_NAME,
    add_input_options,
    add_model_options,
    add_output_options,
    add_parallel_options,
    check_distinct_stems,
    expand_inputs,
    run_files,
)

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(subparsers):
    parser = subparsers.add_parser(
        "score",
        help="score frames; write scores.ecsv (and PNG plots)",
        description=(
            "Score each FILE patch by patch with a trained model and write one row per file "
            f"to {SUMMARY_NAME} in the output directory (file, score, masked_fraction, "
            "threshold, status, error, seconds). A file that cannot be scored is recorded as "
            "failed, named on stderr, and the exit status is 1; the other files are still done. "
            "With --n-workers or --scheduler the files are scored in parallel on Dask."
        ),
    )
    add_input_options(parser)
    add_model_options(parser)
    add_output_options(parser)
    add_parallel_options(parser)
    parser.add_argument(
        "--plots",
        action="store_true",
        help="also write <stem>_aeqa.png per file: the image with the mask outlined, the score "
        "map and the score histogram",
    )
    parser.set_defaults(func=run)
    return parser


def run(args):
    paths = expand_inputs(args.files)
    out_dir = Path(args.output_dir)
    summary = out_dir / SUMMARY_NAME
    if summary.exists() and not args.overwrite:
        msg = (
            f"{summary}: file exists; pass --overwrite to replace it or choose another --output-dir"
        )
        raise FileExistsError(msg)
    if args.plots:
        check_distinct_stems(paths)
    return run_files(args, paths, out_dir=out_dir, write_masks=False, plots=args.plots)
