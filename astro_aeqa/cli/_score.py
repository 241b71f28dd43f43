# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``aeqa score``: score frames and write the ``scores.ecsv`` table."""

import logging
import sys
from pathlib import Path

from ..utils import atomic_write
from ._inputs import (
    SUMMARY_NAME,
    add_input_options,
    add_model_options,
    add_output_options,
    check_distinct_stems,
    expand_inputs,
    fits_stem,
    load_evaluator,
    parse_hdu,
    print_summary,
    run_per_file,
    write_summary,
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
            "failed, named on stderr, and the exit status is 1; the other files are still done."
        ),
    )
    add_input_options(parser)
    add_model_options(parser, required=True)
    add_output_options(parser)
    parser.add_argument(
        "--plots",
        action="store_true",
        help="also write <stem>_aeqa.png per file: the image with the mask outlined, the score "
        "map and the score histogram",
    )
    parser.set_defaults(func=run)
    return parser


def _save_figure(fig, path, overwrite):
    import matplotlib.pyplot as plt

    try:
        with atomic_write(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)


def run(args):
    from ..io import read_image

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
    hdu = parse_hdu(args.hdu)
    ev = load_evaluator(args.model, device=args.device)
    out_dir.mkdir(parents=True, exist_ok=True)

    def job(path):
        if args.plots:
            plot_path = out_dir / f"{fits_stem(path)}_aeqa.png"
            if plot_path.exists() and not args.overwrite:
                msg = f"{plot_path}: file exists; pass --overwrite to replace it"
                raise FileExistsError(msg)
        ccd = read_image(path, hdu=hdu)
        res = ev.evaluate(ccd, threshold=args.threshold, fpr=args.fpr)
        if args.plots:
            _save_figure(res.plot(ccd.data), plot_path, args.overwrite)
        log.debug("%s: score %.4g, masked %.2f%%", path, res.score, 100 * res.masked_fraction)
        return {
            "score": res.score,
            "masked_fraction": res.masked_fraction,
            "threshold": res.threshold,
        }

    rows = run_per_file(
        paths, job, desc="score", enabled=args.progress_bar, show_traceback=args.traceback
    )
    meta = {
        "command": "score",
        "model": str(args.model),
        "model_sha": ev.model_sha,
        "aeqa_version": _version(),
        "hdu": args.hdu,
    }
    path = write_summary(rows, out_dir, meta=meta, overwrite=True)
    print_summary(rows, path, quiet=args.quiet)
    n_failed = sum(row["status"] == "failed" for row in rows)
    if n_failed:
        print(f"aeqa score: {n_failed} of {len(rows)} files failed; see {path}", file=sys.stderr)
    return 1 if n_failed else 0


def _version():
    from .. import __version__

    return __version__
