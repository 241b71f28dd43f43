# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``aeqa mask``: write masked FITS files (the layout of `astro_aeqa.io`)."""

import logging
import os
from pathlib import Path

from ..io import check_output_path
from ._inputs import (
    SUMMARY_NAME,
    add_input_options,
    add_model_options,
    add_output_options,
    add_parallel_options,
    check_distinct_stems,
    expand_inputs,
    fits_stem,
    run_files,
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
            "failed); the rows of an earlier run for other files are kept unless --overwrite. "
            "An output that is one of the inputs (also through a link) is refused. "
            "A failed file is named on stderr and the exit status is 1, the other "
            "files are still done. With --n-workers or --scheduler the files are done in "
            "parallel on Dask."
        ),
    )
    add_input_options(parser)
    add_model_options(parser)
    add_output_options(parser)
    add_parallel_options(parser)
    parser.add_argument(
        "--compress",
        action="store_true",
        help="write MASK and AEQA_FLAGS tile-compressed (lossless Rice, as fpack): a few "
        "hundred kB instead of 16 MB each for a 4096x4096 frame, in about the same time; the "
        "data are never compressed",
    )
    parser.set_defaults(func=run)
    return parser


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


def _check_outputs_are_not_inputs(paths, out_dir):
    """No ``<stem>_aeqa.fits`` may be one of the inputs (also through a link)."""
    inodes = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        inodes[(st.st_dev, st.st_ino)] = path
    for path in paths:
        target = out_dir / f"{fits_stem(path)}_aeqa.fits"
        try:
            st = os.stat(target)
        except OSError:
            continue  # not there yet: it cannot be an input
        source = inodes.get((st.st_dev, st.st_ino))
        if source is not None:
            check_output_path(target, inputs=[source])


def run(args):
    out_dir = Path(args.output_dir)
    paths = _drop_own_outputs(expand_inputs(args.files), out_dir)
    check_distinct_stems(paths)
    _check_outputs_are_not_inputs(paths, out_dir)
    return run_files(args, paths, out_dir=out_dir, write_masks=True)
