# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``aeqa mask``: write masked FITS files (the layout of `astro_aeqa.io`)."""

import logging
import sys
from pathlib import Path

import numpy as np

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
        "mask",
        help="write <stem>_aeqa.fits per file: data, MASK, AEQA_SCORE, AEQA_FLAGS",
        description=(
            "Score and mask each FILE and write <stem>_aeqa.fits in the output directory: the "
            "data unchanged, MASK (the input mask OR the AEQA mask), AEQA_SCORE (patch scores "
            "with the WCS of the patch grid), AEQA_FLAGS (bit flags) and the AEQA* keywords. "
            "A file whose output exists is skipped unless --overwrite. "
            f"{SUMMARY_NAME} in the output directory lists every file (status ok, skipped or "
            "failed); a failed file is named on stderr and the exit status is 1, the other "
            "files are still done."
        ),
    )
    add_input_options(parser)
    add_model_options(parser, required=True)
    add_output_options(parser)
    parser.set_defaults(func=run)
    return parser


def _from_header(path):
    """Summary values of an existing output file, from its AEQA keywords."""
    from astropy.io import fits

    header = fits.getheader(path, 0)
    return {
        "score": float(header.get("AEQASCOR", np.nan)),
        "masked_fraction": float(header.get("AEQAMFR", np.nan)),
        "threshold": float(header.get("AEQATHR", np.nan)),
    }


def _drop_own_outputs(paths, out_dir):
    """Leave out the ``*_aeqa.fits`` outputs of an earlier run found among the inputs."""
    out_dir = out_dir.resolve()
    kept = []
    for path in paths:
        if path.resolve().parent == out_dir and fits_stem(path).endswith("_aeqa"):
            log.info("%s: an output of aeqa mask in the output directory; not an input", path)
        else:
            kept.append(path)
    if not kept:
        msg = f"every input is an output of aeqa mask in {out_dir}; pass the original frames"
        raise ValueError(msg)
    return kept


def run(args):
    out_dir = Path(args.output_dir)
    paths = _drop_own_outputs(expand_inputs(args.files), out_dir)
    check_distinct_stems(paths)
    hdu = parse_hdu(args.hdu)
    ev = load_evaluator(args.model, device=args.device)
    out_dir.mkdir(parents=True, exist_ok=True)

    def job(path):
        target = out_dir / f"{fits_stem(path)}_aeqa.fits"
        if target.exists() and not args.overwrite:
            log.info("%s: %s exists; skipped (pass --overwrite to redo it)", path, target)
            try:
                values = _from_header(target)
            except (OSError, ValueError) as exc:
                log.warning("%s: cannot read the AEQA keywords (%s)", target, exc)
                values = {}
            return {**values, "status": "skipped"}
        res = ev.write_masked(
            path, target, threshold=args.threshold, fpr=args.fpr, hdu=hdu, overwrite=args.overwrite
        )
        log.debug("%s: wrote %s (masked %.2f%%)", path, target, 100 * res.masked_fraction)
        return {
            "score": res.score,
            "masked_fraction": res.masked_fraction,
            "threshold": res.threshold,
        }

    rows = run_per_file(
        paths, job, desc="mask", enabled=args.progress_bar, show_traceback=args.traceback
    )
    from .. import __version__

    meta = {
        "command": "mask",
        "model": str(args.model),
        "model_sha": ev.model_sha,
        "aeqa_version": __version__,
        "hdu": args.hdu,
    }
    # The table summarises the outputs in the directory (skipped ones included), so a
    # rerun replaces it.
    path = write_summary(rows, out_dir, meta=meta, overwrite=True)
    print_summary(rows, path, quiet=args.quiet)
    n_failed = sum(row["status"] == "failed" for row in rows)
    if n_failed:
        print(f"aeqa mask: {n_failed} of {len(rows)} files failed; see {path}", file=sys.stderr)
    return 1 if n_failed else 0
