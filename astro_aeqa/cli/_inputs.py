# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Helpers shared by the ``aeqa`` subcommands that read many files: expanding
the inputs (globs, directories, ``@list`` files), the common options, loading
the model, running one job per file so that a bad file fails alone, and the
``scores.ecsv`` summary.
"""

import glob
import logging
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from ..exceptions import InputDataError
from ..utils import atomic_write, progress_bar

__all__ = [
    "FITS_SUFFIXES",
    "SUMMARY_NAME",
    "add_input_options",
    "add_model_options",
    "add_output_options",
    "check_distinct_stems",
    "expand_inputs",
    "fits_stem",
    "load_evaluator",
    "one_line",
    "parse_hdu",
    "print_summary",
    "run_per_file",
    "summary_table",
    "write_summary",
]

log = logging.getLogger(__name__)

#: File name endings of the FITS files found in a directory.
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz")
#: Name of the per-file summary table written in the output directory.
SUMMARY_NAME = "scores.ecsv"
_GLOB_CHARS = set("*?[")
_SUMMARY_ROWS_SHOWN = 20


# -- inputs ------------------------------------------------------------------


def parse_hdu(value):
    """Return ``value`` as an int when it is an integer string, else unchanged."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def _is_fits_name(path):
    name = path.name.lower()
    return any(name.endswith(suffix) for suffix in FITS_SUFFIXES)


def fits_stem(path):
    """Return the file name of ``path`` without its FITS suffix (``a.fits.gz`` -> ``a``)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


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
        Each is a file, a directory (its ``*.fits``, ``*.fit``, ``*.fts`` and
        ``*.fits.gz`` files, sorted), a glob pattern (sorted matches), or
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


def check_distinct_stems(paths):
    """Raise `ValueError` if two inputs would write outputs of the same name."""
    owners = {}
    for path in paths:
        stem = fits_stem(path)
        if stem in owners:
            msg = (
                f"{owners[stem]} and {path} would write outputs of the same name ({stem}_aeqa.*); "
                "process them into different --output-dir directories"
            )
            raise ValueError(msg)
        owners[stem] = path


# -- options -----------------------------------------------------------------


def add_input_options(parser):
    """Add the ``FILE`` inputs and ``--hdu``."""
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="FITS files, directories (every *.fits, *.fit, *.fts, *.fits.gz inside), glob "
        "patterns (quote them) or @LIST text files of paths (one per line, # comments)",
    )
    parser.add_argument(
        "--hdu",
        default=None,
        help="HDU index or EXTNAME of the image in multi-extension files "
        "(default: the primary HDU if it has data, else the only image extension)",
    )


def add_model_options(parser, *, required):
    """Add ``--model`` and ``--device``."""
    note = " Required: no pretrained model ships with this version yet." if required else ""
    parser.add_argument(
        "--model",
        required=required,
        metavar="MODEL",
        help="model file written by `aeqa train` or AEQualityEvaluator.save "
        "(*.safetensors)." + note,
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


def load_evaluator(model, *, device=None):
    """Load the evaluator of a model file (``'default'``: the pretrained model, when shipped)."""
    from ..evaluator import AEQualityEvaluator

    if model == "default":
        pretrained = getattr(AEQualityEvaluator, "pretrained", None)
        if pretrained is None:
            msg = (
                "no pretrained model ships with this version of astro_aeqa: "
                "train one with `aeqa train` and pass its file"
            )
            raise FileNotFoundError(msg)
        return pretrained(device=device)
    return AEQualityEvaluator.load(model, device=device)


# -- one job per file --------------------------------------------------------


def one_line(exc):
    """The message of ``exc`` on one line (its type when the message is empty)."""
    text = "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    if not text:
        text = type(exc).__name__
    return text


def run_per_file(paths, job, *, desc, enabled=True, show_traceback=False):
    """
    Call ``job(path)`` for each file; a file that raises fails alone.

    ``job`` returns a dict of summary values (``score``, ``masked_fraction``,
    ``threshold`` and, optionally, ``status``). A failure is logged on
    stderr with the file name (and its traceback with ``show_traceback``) and
    gives a row with status ``'failed'`` and the error text.

    Returns
    -------
    rows : list of dict
        One per file: ``file``, ``score``, ``masked_fraction``,
        ``threshold``, ``status``, ``error``, ``seconds``.
    """
    rows = []
    for path in progress_bar(paths, enabled=enabled, desc=desc, unit="file"):
        t0 = time.perf_counter()
        row = {
            "file": str(path),
            "score": np.nan,
            "masked_fraction": np.nan,
            "threshold": np.nan,
            "status": "ok",
            "error": "",
        }
        try:
            row.update(job(path))
        except Exception as exc:  # one bad file must not stop the others
            row["status"] = "failed"
            row["error"] = one_line(exc)
            if str(path) in row["error"]:
                log.error("%s", row["error"])
            else:
                log.error("%s: %s", path, row["error"])
            if show_traceback:
                traceback.print_exception(exc, file=sys.stderr)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    return rows


# -- summary -----------------------------------------------------------------


def summary_table(rows, *, meta=None):
    """Return the rows as an `~astropy.table.Table` with the summary columns."""
    from astropy.table import Table

    names = ["file", "score", "masked_fraction", "threshold", "status", "error", "seconds"]
    dtypes = [str, float, float, float, str, str, float]
    table = Table(
        [[row[name] for row in rows] for name in names] if rows else None,
        names=names,
        dtype=dtypes,
    )
    table["masked_fraction"].description = "fraction of the frame's pixels masked by AEQA"
    table["threshold"].description = "patch-score threshold"
    table["status"].description = "ok, skipped (output exists) or failed"
    table["seconds"].unit = "s"
    table.meta.update(meta or {})
    return table


def write_summary(rows, out_dir, *, meta=None, overwrite=True):
    """Write ``scores.ecsv`` in ``out_dir`` atomically and return its path."""
    table = summary_table(rows, meta=meta)
    path = Path(out_dir) / SUMMARY_NAME
    with atomic_write(path, overwrite=overwrite) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path


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
