# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Helpers shared by the ``aeqa`` subcommands that read many files: expanding
the inputs (globs, directories, ``@list`` files), the common options, and
running ``score`` and ``mask`` over the files, here or on Dask, through
`astro_aeqa.parallel` (one job per file, so that a bad file fails alone; the
``scores.ecsv`` summary).
"""

import glob
import logging
import sys
from pathlib import Path

import numpy as np

from ..exceptions import InputDataError
from ..parallel import (
    FITS_SUFFIXES,
    SUMMARY_NAME,
    _score_rows,
    check_distinct_stems,
    fits_stem,
    load_evaluator,
    read_summary_rows,
    summary_table,
    write_summary,
)
from ..utils import check_writable_dir

__all__ = [
    "FITS_SUFFIXES",
    "SUMMARY_NAME",
    "add_input_options",
    "add_model_options",
    "add_output_options",
    "add_parallel_options",
    "check_distinct_stems",
    "expand_inputs",
    "fits_stem",
    "load_evaluator",
    "parse_hdu",
    "print_summary",
    "run_files",
    "summary_table",
    "write_summary",
]

log = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")
_SUMMARY_ROWS_SHOWN = 20


# -- inputs ------------------------------------------------------------------


def parse_hdu(value):
    """
    Parse ``--hdu``: an index, an EXTNAME, or ``EXTNAME,EXTVER``.

    Examples
    --------
    >>> from astro_aeqa.cli._inputs import parse_hdu
    >>> parse_hdu("2"), parse_hdu("SCI"), parse_hdu("SCI,2")
    (2, 'SCI', ('SCI', 2))
    """
    if value is None:
        return None
    value = value.strip()
    try:
        return int(value)
    except ValueError:
        pass
    if "," in value:
        name, _, version = (part.strip() for part in value.partition(","))
        try:
            version = int(version)
        except ValueError:
            version = None
        if not name or version is None:
            msg = (
                f"--hdu {value!r}: give an index (2), an EXTNAME (SCI) or an EXTNAME,EXTVER "
                "pair (SCI,2)"
            )
            raise ValueError(msg) from None
        return (name, version)
    return value


def _is_fits_name(path):
    name = path.name.lower()
    return any(name.endswith(suffix) for suffix in FITS_SUFFIXES)


def _expand_one(spec, *, where):
    """Paths of one input: a file, a directory, or a glob pattern."""
    path = Path(spec).expanduser()
    if _GLOB_CHARS & set(str(spec)):
        if path.exists():  # a file whose name holds [ or *
            return [path]
        matches = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not matches:
            msg = f"{spec}{where}: no file matches this pattern; check the pattern and directory"
            raise InputDataError(msg)
        return matches
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and _is_fits_name(p))
        if not found:
            msg = (
                f"{spec}{where}: no FITS file in this directory (looked for "
                f"{', '.join('*' + s for s in FITS_SUFFIXES)}); pass the files or a glob instead"
            )
            raise InputDataError(msg)
        return found
    if not path.exists():
        msg = f"{spec}{where}: no such file or directory; check the path"
        raise FileNotFoundError(msg)
    return [path]


def _read_list_file(spec):
    list_path = Path(spec[1:]).expanduser()
    if not list_path.is_file():
        msg = (
            f"{spec}: list file {list_path} not found; an @FILE argument names a text file of paths"
        )
        raise FileNotFoundError(msg)
    entries = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        entry = Path(line).expanduser()
        if not entry.is_absolute():
            entry = list_path.parent / entry
        entries.append((str(entry), f" (line {number} of {list_path})"))
    if not entries:
        msg = f"{spec}: the list file {list_path} names no file (one path per line, # comments)"
        raise InputDataError(msg)
    return entries


def expand_inputs(specs):
    """
    Expand command-line inputs into a sorted, de-duplicated list of files.

    Parameters
    ----------
    specs : list of str
        Each is a file, a directory (its ``*.fits``, ``*.fit`` and ``*.fts``
        files, also compressed as ``.gz``, ``.bz2`` or ``.fz``, sorted), a
        glob pattern (sorted matches), or
        ``@LIST``: a text file of such inputs, one per line, with ``#``
        comments; relative paths in it are relative to the list file's
        directory.

    Returns
    -------
    paths : list of `~pathlib.Path`
        In the order given, each file once.

    Raises
    ------
    FileNotFoundError
        If a file or list file does not exist.
    astro_aeqa.exceptions.InputDataError
        If a directory holds no FITS file, a pattern matches nothing or a list
        file is empty.
    """
    paths, seen = [], set()
    for spec in specs:
        if spec.startswith("@"):
            items = _read_list_file(spec)
        else:
            items = [(spec, "")]
        for item, where in items:
            for path in _expand_one(item, where=where):
                key = path.resolve()
                if key not in seen:
                    seen.add(key)
                    paths.append(path)
    return paths


# -- options -----------------------------------------------------------------


def add_input_options(parser):
    """Add the ``FILE`` inputs and ``--hdu``."""
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="FITS files, directories (every *.fits, *.fit, *.fts inside, also .gz, .bz2 "
        "and .fz compressed), glob "
        "patterns (quote them) or @LIST text files of paths (one per line, # comments)",
    )
    parser.add_argument(
        "--hdu",
        default=None,
        help="HDU of the image in multi-extension files: an index (2), an EXTNAME (SCI) or "
        "EXTNAME,EXTVER (SCI,2) (default: the primary HDU if it has data, else the only "
        "image extension)",
    )


def add_model_options(parser):
    """Add ``--model`` and ``--device``."""
    parser.add_argument(
        "--model",
        default="default",
        metavar="MODEL",
        help="model file written by `aeqa train` or AEQualityEvaluator.save (*.safetensors), "
        "or 'default' (the default): the pretrained model shipped with astro_aeqa, or the "
        "default_model item of astro_aeqa.cfg",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="where to run the network: auto, cpu, cuda, cuda:1, mps... "
        "(default: astro_aeqa.conf.device)",
    )


def add_output_options(parser):
    """Add ``--output-dir``, ``--overwrite``, ``--fpr`` and ``--threshold``."""
    parser.add_argument(
        "--output-dir",
        default="aeqa_output",
        metavar="DIR",
        help="directory of the outputs (default: aeqa_output, created if needed)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    threshold = parser.add_mutually_exclusive_group()
    threshold.add_argument(
        "--fpr",
        type=float,
        default=None,
        help="false-mask rate on clean reference patches that sets the threshold "
        "(default: the model's, usually 0.01)",
    )
    threshold.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="explicit patch-score threshold instead of --fpr",
    )


def add_parallel_options(parser):
    """Add ``--n-workers`` and ``--scheduler`` (Dask)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--n-workers",
        type=int,
        default=None,
        metavar="N",
        help="score on a local Dask cluster of N single-threaded worker processes "
        "(default: one file after another in this process)",
    )
    where.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="score on an existing Dask cluster, e.g. tcp://host:8786; every worker must be "
        "able to read the model and the files",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run the network through torch.compile (needs a C++ compiler): the first file "
        "waits 10-40 s for the compilation, the others are about 1.5x faster; for batches "
        "of tens of large frames",
    )


# -- running -----------------------------------------------------------------


def run_files(args, paths, *, out_dir, write_masks, plots=False):
    """
    Score ``paths`` as ``aeqa score`` or ``aeqa mask``: here, or on Dask with
    ``--n-workers`` or ``--scheduler``; write ``scores.ecsv`` and print the
    summary.

    Returns
    -------
    status : int
        1 if any file failed, else 0.
    """
    if args.n_workers is not None and args.n_workers < 1:
        msg = f"--n-workers must be at least 1, got {args.n_workers}"
        raise ValueError(msg)
    on_dask = args.n_workers is not None or args.scheduler is not None
    check_writable_dir(out_dir)  # before the model is loaded and any file is scored
    summary = out_dir / SUMMARY_NAME
    merge = write_masks and not args.overwrite and summary.exists()
    if merge:
        read_summary_rows(summary)  # an unreadable table stops the run before the work
    model = (
        args.model
        if on_dask
        else load_evaluator(args.model, device=args.device, compile=args.compile)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    options = {
        "output_dir": str(out_dir.resolve()),
        "write_masks": write_masks,
        "plots": plots,
        "overwrite": args.overwrite,
        "hdu": parse_hdu(args.hdu),
        "threshold": args.threshold,
        "fpr": args.fpr,
    }
    if write_masks:
        options["compress"] = args.compress
    rows, sha = _score_rows(
        paths,
        model,
        options,
        scheduler=args.scheduler if on_dask else "synchronous",
        n_workers=args.n_workers,
        device=args.device,
        compile=args.compile,
        progress_bar=args.progress_bar,
        show_traceback=args.traceback,
    )
    from .. import __version__

    meta = {
        "command": args.command,
        "model": str(args.model),
        "model_sha": sha,
        "aeqa_version": __version__,
        "hdu": args.hdu,
    }
    # A rerun of mask merges its rows into the table (the rows of other files stay);
    # score refuses an existing table before it starts, unless --overwrite.
    _, path = write_summary(rows, out_dir, meta=meta, overwrite=True, merge=merge)
    print_summary(rows, path, quiet=args.quiet)
    n_failed = sum(row["status"] == "failed" for row in rows)
    if n_failed:
        print(
            f"aeqa {args.command}: {n_failed} of {len(rows)} files failed; see {path}",
            file=sys.stderr,
        )
    return 1 if n_failed else 0


# -- summary -----------------------------------------------------------------


def _fmt(value, spec, width):
    text = "-" if value is None or not np.isfinite(value) else format(value, spec)
    return f"{text:>{width}}"


def print_summary(rows, path, *, quiet=False, file=None):
    """Print a short table of the rows and the path of the summary file."""
    file = sys.stdout if file is None else file
    if not quiet:
        width = min(40, max([4] + [len(Path(r["file"]).name) for r in rows]))
        print(
            f"{'file':<{width}}  {'status':<7}  {'score':>9}  {'masked':>7}  {'seconds':>7}",
            file=file,
        )
        for row in rows[:_SUMMARY_ROWS_SHOWN]:
            name = Path(row["file"]).name
            if len(name) > width:
                name = "..." + name[-(width - 3) :]
            masked = row["masked_fraction"]
            masked = "-" if not np.isfinite(masked) else f"{masked:.1%}"
            print(
                f"{name:<{width}}  {row['status']:<7}  {_fmt(row['score'], '.4g', 9)}  "
                f"{masked:>7}  {row['seconds']:7.2f}",
                file=file,
            )
        if len(rows) > _SUMMARY_ROWS_SHOWN:
            print(f"... and {len(rows) - _SUMMARY_ROWS_SHOWN} more (see {path})", file=file)
        counts = {
            status: sum(r["status"] == status for r in rows)
            for status in ("ok", "skipped", "failed")
        }
        parts = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        print(f"{len(rows)} files: {parts}", file=file)
    print(path, file=file)
