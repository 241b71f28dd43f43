# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Score many FITS files, in this process or on a Dask cluster.

`score_files` runs one task per file, so a corrupt file fails alone and is
reported in the summary table with its error. On Dask, a worker plugin loads
the model once per worker. Outputs are written atomically, and a rerun skips
the files whose ``<stem>_aeqa.fits`` already exists.

Dask (``dask[distributed]``) is needed only for the cluster path; it is
imported when a cluster is used.
"""

import contextlib
import logging
import os
import sys
import time
import traceback
import uuid
from pathlib import Path

import numpy as np

from .utils import check_writable_dir, file_sha256, save_figure_atomic, write_table_atomic
from .utils import progress_bar as _progress_bar
from .utils._optional import _MissingDependency

__all__ = ["score_files"]

log = logging.getLogger(__name__)

#: Name of the per-file summary table written in the output directory.
SUMMARY_NAME = "scores.ecsv"
#: Columns of the summary table, one row per file.
SUMMARY_COLUMNS = ("file", "score", "masked_fraction", "threshold", "status", "error", "seconds")
_SUMMARY_DTYPES = (str, float, float, float, str, str, float)
#: File name endings of FITS files (astropy reads the compressed ones as they are).
FITS_SUFFIXES = tuple(
    base + packed for base in (".fits", ".fit", ".fts") for packed in ("", ".gz", ".bz2", ".fz")
)
_PLUGIN_PREFIX = "astro_aeqa-evaluator-"


# -- one file ------------------------------------------------------------------


def fits_stem(path):
    """
    Return the file name of ``path`` without its FITS suffix.

    Examples
    --------
    >>> from astro_aeqa.parallel import fits_stem
    >>> fits_stem("night/frame_001.fits.gz")
    'frame_001'
    >>> fits_stem("IMG01320.fits.bz2")
    'IMG01320'
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def check_distinct_stems(paths):
    """Raise `ValueError` if two inputs would write outputs of the same name."""
    owners = {}
    for path in paths:
        stem = fits_stem(path)
        if stem in owners:
            msg = (
                f"{owners[stem]} and {path} would write outputs of the same name ({stem}_aeqa.*); "
                "process them into different output directories"
            )
            raise ValueError(msg)
        owners[stem] = path


def _values_from_header(path):
    """Summary values of an existing output file, from its AEQA keywords."""
    from astropy.io import fits

    from .io import KEYWORDS

    header = fits.getheader(path, 0)
    return {
        name: _number(header.get(KEYWORDS[name]))
        for name in ("score", "masked_fraction", "threshold")
    }


def _number(value):
    """``value`` as a float; NaN where it is missing, undefined or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def process_file(
    path,
    evaluator,
    *,
    output_dir=None,
    write_masks=False,
    plots=False,
    overwrite=False,
    hdu=None,
    threshold=None,
    fpr=None,
    compress=False,
):
    """
    Score one file, and write its outputs, as `score_files` does for each file.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The FITS file.
    evaluator : `~astro_aeqa.AEQualityEvaluator`
        A fitted evaluator.
    output_dir : str or `~pathlib.Path`, optional
        Where ``<stem>_aeqa.fits`` and ``<stem>_aeqa.png`` go; required with
        ``write_masks`` or ``plots``.
    write_masks : bool, optional
        Write ``<stem>_aeqa.fits`` (see
        `~astro_aeqa.AEQualityEvaluator.write_masked`). If it exists and
        ``overwrite`` is False, the file is not scored again: its values
        are read from the output's AEQA keywords and the status is
        ``'skipped'``.
    plots : bool, optional
        Write ``<stem>_aeqa.png``: the frame with the mask outlined, the
        score map and the score histogram.
    overwrite : bool, optional
        Redo files whose outputs exist.
    hdu, threshold, fpr : optional
        As in `~astro_aeqa.AEQualityEvaluator.evaluate`.
    compress : bool, optional
        Write the mask and flag planes tile-compressed (see
        `~astro_aeqa.io.write_aeqa_fits`).

    Returns
    -------
    values : dict
        ``score``, ``masked_fraction``, ``threshold`` and ``status``
        (``'ok'`` or ``'skipped'``).

    Raises
    ------
    Exception
        Whatever reading or scoring the file raises; `score_files` records
        it as a failed row.
    """
    if (write_masks or plots) and output_dir is None:
        msg = "output_dir is required to write masks or plots"
        raise ValueError(msg)
    stem = fits_stem(path)
    output_dir = None if output_dir is None else Path(output_dir)
    if write_masks:
        target = output_dir / f"{stem}_aeqa.fits"
        skipped = _skipped(path, target, overwrite)
        if skipped is not None:
            return skipped
    if plots:
        plot_path = output_dir / f"{stem}_aeqa.png"
        if plot_path.exists() and not overwrite:
            msg = f"{plot_path}: file exists; pass overwrite=True to replace it"
            raise FileExistsError(msg)
    if write_masks:
        image = None
        result = evaluator.write_masked(
            path,
            target,
            threshold=threshold,
            fpr=fpr,
            hdu=hdu,
            overwrite=overwrite,
            compress=compress,
        )
    else:
        from .io import read_image

        ccd = read_image(path, hdu=hdu)
        image = ccd.data
        result = evaluator.evaluate(ccd, threshold=threshold, fpr=fpr)
    if plots:
        save_figure_atomic(result.plot(image), plot_path, overwrite=overwrite, close=True)
    log.debug("%s: score %.4g, masked %.2f%%", path, result.score, 100 * result.masked_fraction)
    return _result_values(result)


def _skipped(path, target, overwrite):
    """The row values of a file whose output ``target`` exists (None: score it)."""
    if overwrite or not target.exists():
        return None
    log.info("%s: %s exists; skipped (pass overwrite to redo it)", path, target)
    try:
        values = _values_from_header(target)
    except (OSError, ValueError) as exc:
        log.warning("%s: cannot read the AEQA keywords (%s)", target, exc)
        values = {}
    return {**values, "status": "skipped"}


def _result_values(result):
    return {
        "score": result.score,
        "masked_fraction": result.masked_fraction,
        "threshold": result.threshold,
        "status": "ok",
    }


def _pipelined_rows(paths, evaluator, options, *, progress_bar, show_traceback):
    """The rows of ``write_masks`` jobs, a file at a time, each output written
    on a second thread while the next file is read and scored.

    Reading, scoring and building an output stay on this thread: they set
    warning filters, which are process-wide and not thread-safe. Only the
    write of a finished `~astropy.io.fits.HDUList` runs beside them, so at
    most two frames are in memory. A file's ``seconds`` are the sum of its
    own reading, scoring and writing. On an interrupt, a write under way
    completes (atomically) before the interrupt goes on.
    """
    from concurrent.futures import ThreadPoolExecutor

    out_dir, overwrite = Path(options["output_dir"]), options.get("overwrite", False)
    hdu, threshold, fpr = options.get("hdu"), options.get("threshold"), options.get("fpr")
    compress = options.get("compress", False)

    def target(path):
        return out_dir / f"{fits_stem(path)}_aeqa.fits"

    def prepare(path):  # a finished row, or (output HDUList, row values, seconds)
        t0 = time.perf_counter()
        try:
            skipped = _skipped(path, target(path), overwrite)
            if skipped is not None:
                return {**_empty_row(path), "error": "", "seconds": 0.0, **skipped}
            frame = evaluator._read_for_output(path, target(path), hdu=hdu, overwrite=overwrite)
            result = evaluator._evaluate_ccd(frame.ccd, threshold=threshold, fpr=fpr)
            hdulist = evaluator._output_hdulist(frame, result, path, compress=compress)
        except Exception as exc:  # one bad file must not stop the others
            return _failed_row(path, exc, time.perf_counter() - t0)
        return hdulist, _result_values(result), time.perf_counter() - t0

    def write(hdulist, path):  # (exception or None, seconds)
        t0 = time.perf_counter()
        try:
            evaluator._write_output(hdulist, target(path), overwrite=overwrite)
        except Exception as exc:  # reported in the file's row
            return exc, time.perf_counter() - t0
        return None, time.perf_counter() - t0

    def finish(path, future, values, seconds):  # the row of a file once it is written
        exc, write_seconds = future.result()
        if exc is not None:
            return _failed_row(path, exc, seconds + write_seconds)
        return {**_empty_row(path), "error": "", **values, "seconds": seconds + write_seconds}

    rows = []

    def add(row):
        rows.append(row)
        _report(row, show_traceback)

    with ThreadPoolExecutor(1, thread_name_prefix="aeqa-write") as writer:
        writing = None  # (path, future, values, seconds) of the output being written
        for path in _progress_bar(paths, enabled=progress_bar, desc="score", unit="file"):
            prepared = prepare(path)
            if writing is not None:
                add(finish(*writing))
                writing = None
            if isinstance(prepared, dict):
                add(prepared)
            else:
                hdulist, values, seconds = prepared
                writing = (path, writer.submit(write, hdulist, path), values, seconds)
                del hdulist, prepared  # the writer holds the only reference
        if writing is not None:
            add(finish(*writing))
    return rows


def _one_line(exc):
    text = "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def _empty_row(path):
    nan = np.nan
    return {"file": str(path), "score": nan, "masked_fraction": nan, "threshold": nan}


def _failed_row(path, exc, seconds=np.nan):
    return {
        **_empty_row(path),
        "status": "failed",
        "error": _one_line(exc),
        "seconds": seconds,
        "_traceback": "".join(traceback.format_exception(exc)),
    }


def _file_row(path, job):
    """Call ``job(path)`` and return the summary row; an exception gives a failed row."""
    t0 = time.perf_counter()
    try:
        values = job(path)
    except Exception as exc:  # one bad file must not stop the others
        return _failed_row(path, exc, time.perf_counter() - t0)
    row = {**_empty_row(path), "status": "ok", "error": "", **values}
    row["seconds"] = time.perf_counter() - t0
    return row


def _report(row, show_traceback):
    """Log a failed row on stderr, naming the file."""
    if row["status"] != "failed":
        return
    if row["file"] in row["error"]:
        log.error("%s", row["error"])
    else:
        log.error("%s: %s", row["file"], row["error"])
    if show_traceback and row.get("_traceback"):
        print(row["_traceback"], file=sys.stderr, end="")


def _job(evaluator, options):
    def job(path):
        return process_file(path, evaluator, **options)

    return job


# -- the model -----------------------------------------------------------------


def load_evaluator(model, *, device=None, compile=False):  # noqa: A002 (the torch name)
    """Load the evaluator of a model file (``'default'``: the pretrained model)."""
    from .evaluator import AEQualityEvaluator

    if model == "default":
        return AEQualityEvaluator.pretrained(device=device, compile=compile)
    return AEQualityEvaluator.load(model, device=device, compile=compile)


def _model_source(model):
    """The model as workers will load it: an absolute path, or ``'default'``."""
    if model == "default":
        return model
    path = Path(model).expanduser()
    if not path.is_file():
        msg = f"{model}: model file not found; pass a file written by AEQualityEvaluator.save"
        raise FileNotFoundError(msg)
    return str(path.resolve())


# -- Dask ----------------------------------------------------------------------


def _require_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        msg = (
            "scoring on Dask needs dask.distributed: pip install 'astro_aeqa[parallel]' "
            "(or score without n_workers/scheduler)"
        )
        raise _MissingDependency(msg) from exc


def _cpu_count():
    try:
        from dask.system import CPU_COUNT  # honours cgroup and affinity limits

        return int(CPU_COUNT)
    except ImportError:
        return os.cpu_count() or 1


# Workers that are threads of one process share torch's thread setting: it is set
# by the first plugin and given back by the last.
_TORCH_THREADS = {"users": 0, "original": None}


def _claim_torch_threads(n_threads):
    from .nn import Reconstructor, set_torch_threads

    if _TORCH_THREADS["users"] == 0:
        _TORCH_THREADS["original"] = Reconstructor.n_threads()
    _TORCH_THREADS["users"] += 1
    set_torch_threads(int(n_threads))


def _release_torch_threads():
    from .nn import set_torch_threads

    _TORCH_THREADS["users"] = max(0, _TORCH_THREADS["users"] - 1)
    if _TORCH_THREADS["users"] == 0 and _TORCH_THREADS["original"]:
        set_torch_threads(_TORCH_THREADS["original"])


_PLUGIN_CLASS = None


def _plugin_class():
    """The worker plugin class (built on first use so that distributed stays optional)."""
    global _PLUGIN_CLASS
    if _PLUGIN_CLASS is None:
        from distributed import WorkerPlugin

        class EvaluatorPlugin(WorkerPlugin):
            """Loads the evaluator once per worker and caps its torch threads."""

            def __init__(self, model, device, torch_threads, compile=False):  # noqa: A002
                self.model = model
                self.device = device
                self.compile = compile
                self.torch_threads = int(torch_threads)
                self.evaluator = None

            def setup(self, worker):
                _claim_torch_threads(self.torch_threads)
                try:
                    self.evaluator = load_evaluator(
                        self.model, device=self.device, compile=self.compile
                    )
                except Exception:
                    _release_torch_threads()
                    raise

            def teardown(self, worker):
                self.evaluator = None
                _release_torch_threads()

        _PLUGIN_CLASS = EvaluatorPlugin
    return _PLUGIN_CLASS


def _row_on_worker(path, plugin_name, options):
    """The Dask task: one file, with the evaluator the worker plugin loaded."""
    from distributed import get_worker

    from .nn import torch_threads

    plugin = get_worker().plugins[plugin_name]
    # torch's thread count is kept per thread: set it in the thread that scores,
    # which is also the count of the evaluator's own scoring threads
    with torch_threads(plugin.torch_threads):
        return _file_row(path, _job(plugin.evaluator, options))


#: Environment variables that size the thread pools of OpenMP, MKL, OpenBLAS,
#: Accelerate and numexpr in a worker process (they act only at its start).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def _worker_environment(torch_threads):
    """
    The environment local worker processes start with.

    Dask's own (``distributed.nanny.pre-spawn-environ``) with every thread
    pool sized to ``torch_threads``, and without ``MALLOC_TRIM_THRESHOLD_``:
    setting it turns off glibc's adaptive mmap threshold, so that every
    large array is mapped afresh and its pages faulted in again. On 4096x4096
    frames that doubled a worker's time per frame (4x the system time).
    """
    import dask

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", None) or {})
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    env.update({name: str(int(torch_threads)) for name in THREAD_VARIABLES})
    return env


def _new_local_cluster(n_workers, threads_per_worker, processes, torch_threads=1):
    import dask
    from distributed import LocalCluster

    env = _worker_environment(torch_threads)
    # the nanny writes the start-up environment of its workers into this
    # process's os.environ; it is put back once they are started
    saved = {name: os.environ.get(name) for name in env}
    # Local workers listen on localhost only, and the dashboards take any free port:
    # nothing is exposed to the network and several clusters can share a machine.
    localhost = "127.0.0.1"
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                processes=processes,
                protocol="tcp://",
                host=localhost,
                dashboard_address=f"{localhost}:0",
                worker_dashboard_address=f"{localhost}:0",
            )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    log.info("local Dask cluster: %d workers; dashboard %s", n_workers, cluster.dashboard_link)
    return cluster


def _reap_children(children_before):
    """
    End the child processes started since ``children_before`` that still run.

    Called after a local cluster is closed: its worker processes have stopped,
    and are reaped here; one that did not stop is terminated, so that no worker
    outlives the call that started it.
    """
    import multiprocessing

    for child in multiprocessing.active_children():  # also reaps those that ended
        if child in children_before:
            continue
        child.join(timeout=5)
        if child.is_alive():
            log.warning("Dask worker process %s did not stop; ending it", child.pid)
            child.terminate()
            child.join(timeout=5)
        if child.is_alive():
            child.kill()
            child.join()


def _local_sizes(n_workers, threads_per_worker, torch_threads):
    """``(n_workers, torch_threads)`` of a local cluster: threads in all <= cores."""
    cores = _cpu_count()
    if n_workers is None:
        n_workers = max(1, cores // threads_per_worker)
    if int(n_workers) < 1:
        msg = f"n_workers must be at least 1, got {n_workers}"
        raise ValueError(msg)
    n_workers = int(n_workers)
    if torch_threads is None:
        torch_threads = max(1, cores // (n_workers * threads_per_worker))
    return n_workers, int(torch_threads)


def _connect(scheduler, n_workers, threads_per_worker, processes, torch_threads, stack):
    """
    Return ``(client, torch_threads)`` for the scheduler argument.

    What is started here is closed by ``stack`` (a `contextlib.ExitStack`):
    the client first, then the local cluster and its worker processes.
    """
    _require_distributed()
    from distributed import Client

    if scheduler is not None:
        if n_workers is not None:
            msg = "give n_workers (a local cluster) or scheduler (an existing one), not both"
            raise ValueError(msg)
        if isinstance(scheduler, Client):
            return scheduler, torch_threads or 1
        # each worker thread runs one file: one torch thread each keeps threads <= cores
        client = stack.enter_context(Client(scheduler))
        return client, torch_threads or 1
    n_workers, torch_threads = _local_sizes(n_workers, threads_per_worker, torch_threads)
    import multiprocessing

    # closed in reverse order: the client, the cluster, then any worker left running
    stack.callback(_reap_children, set(multiprocessing.active_children()))
    cluster = _new_local_cluster(n_workers, threads_per_worker, processes, torch_threads)
    stack.callback(cluster.close)
    client = stack.enter_context(Client(cluster))
    return client, torch_threads


def _register_plugin(client, model, device, torch_threads, compile=False):  # noqa: A002
    # a name of its own per call: two runs sharing a cluster do not replace each other's model
    name = _PLUGIN_PREFIX + uuid.uuid4().hex[:12]
    plugin = _plugin_class()(model, device, torch_threads, compile)
    responses = client.register_plugin(plugin, name=name)
    for worker, response in (responses or {}).items():
        if isinstance(response, dict) and response.get("status") == "error":
            exc = response.get("exception")
            msg = f"worker {worker} could not load the model {model}: {exc}"
            raise RuntimeError(msg)
    return name


def _window(client, least):
    """Files to keep submitted: two per worker thread of the cluster now, at least ``least``."""
    try:
        threads = sum(client.nthreads().values())
    except Exception as exc:  # noqa: BLE001 - a busy scheduler: keep the window as it is
        log.debug("could not count the worker threads: %s", exc)
        threads = 0
    return max(least, 2 * threads)


def _stream(client, func, items, *, window=None, **kwargs):
    """
    Run ``func(item, **kwargs)`` on Dask for each item; yield ``(index, future)`` as each ends.

    At most ``window`` tasks are submitted at a time (default: two per worker
    thread, counted again as tasks end, so that workers that join later are
    used): each worker has its next file at hand, and a batch of thousands
    of files never sits in the scheduler at once. Items are sent as they are
    (paths: the workers read the files themselves).
    """
    from distributed import as_completed

    items = list(items)
    run = uuid.uuid4().hex[:8]  # keys of their own: runs sharing a cluster do not collide
    fixed = window is not None
    window = window if fixed else _window(client, 2)
    pending = iter(range(len(items)))
    index = {}
    running = as_completed()

    def submit_more():
        while len(index) < window:
            i = next(pending, None)
            if i is None:
                return
            key = f"aeqa-{fits_stem(items[i])}-{run}-{i}"
            future = client.submit(func, items[i], key=key, pure=False, **kwargs)
            index[future.key] = i
            running.add(future)

    try:
        submit_more()
        for future in running:
            i = index.pop(future.key)
            if not fixed:
                window = _window(client, window)
            submit_more()
            yield i, future
    finally:
        client.cancel([f for f in running.futures if not f.done()])
        running.clear()


def _rows_on_dask(
    paths,
    model,
    options,
    *,
    scheduler,
    n_workers,
    threads_per_worker,
    processes,
    torch_threads,
    device,
    compile,  # noqa: A002
    progress_bar,
    show_traceback,
):
    with contextlib.ExitStack() as stack:
        client, torch_threads = _connect(
            scheduler, n_workers, threads_per_worker, processes, torch_threads, stack
        )
        name = _register_plugin(client, model, device, torch_threads, compile)
        # frees the workers' copies of the model (and gives back torch's threads)
        stack.callback(_unregister_plugin, client, name)
        rows = [None] * len(paths)
        bar = stack.enter_context(
            contextlib.closing(
                _progress_bar(enabled=progress_bar, total=len(paths), desc="score", unit="file")
            )
        )
        tasks = stack.enter_context(
            contextlib.closing(
                _stream(
                    client,
                    _row_on_worker,
                    [str(p) for p in paths],
                    plugin_name=name,
                    options=options,
                )
            )
        )
        for i, future in tasks:
            if future.status == "finished":
                row = future.result()
            else:  # the worker died or the task was lost: only this file fails
                row = _failed_row(paths[i], future.exception())
            rows[i] = row
            _report(row, show_traceback)
            future.release()
            bar.update()
        return rows


def _unregister_plugin(client, name):
    try:
        client.unregister_worker_plugin(name)
    except Exception as exc:  # noqa: BLE001 - cleaning up must not hide the result
        log.debug("could not remove the worker plugin %s: %s", name, exc)


def _rows_here(paths, model, options, *, device, compile, progress_bar, show_traceback):  # noqa: A002
    if hasattr(model, "evaluate"):
        evaluator = model
    else:
        evaluator = load_evaluator(model, device=device, compile=compile)
    if options.get("write_masks") and not options.get("plots") and len(paths) > 1:
        return _pipelined_rows(
            list(paths),
            evaluator,
            options,
            progress_bar=progress_bar,
            show_traceback=show_traceback,
        )
    job = _job(evaluator, options)
    rows = []
    for path in _progress_bar(paths, enabled=progress_bar, desc="score", unit="file"):
        row = _file_row(path, job)
        _report(row, show_traceback)
        rows.append(row)
    return rows


def _score_rows(
    paths,
    model,
    options,
    *,
    scheduler=None,
    n_workers=None,
    threads_per_worker=1,
    processes=True,
    torch_threads=None,
    device="cpu",
    compile=False,  # noqa: A002
    progress_bar=True,
    show_traceback=False,
):
    """The summary rows of ``paths`` (in their order), and the model's sha."""
    if scheduler == "synchronous":
        if n_workers is not None:
            msg = "n_workers has no meaning with scheduler='synchronous'"
            raise ValueError(msg)
        rows = _rows_here(
            paths,
            model,
            options,
            device=device,
            compile=compile,
            progress_bar=progress_bar,
            show_traceback=show_traceback,
        )
        sha = model.model_sha if hasattr(model, "model_sha") else _sha_of(model)
        return rows, sha
    if hasattr(model, "evaluate"):
        msg = (
            "on Dask, pass the model as a file path that the workers can read "
            "(save the evaluator with AEQualityEvaluator.save first)"
        )
        raise TypeError(msg)
    source = _model_source(model)
    if threads_per_worker < 1:
        msg = f"threads_per_worker must be at least 1, got {threads_per_worker}"
        raise ValueError(msg)
    rows = _rows_on_dask(
        paths,
        source,
        options,
        scheduler=scheduler,
        n_workers=n_workers,
        threads_per_worker=int(threads_per_worker),
        processes=processes,
        torch_threads=torch_threads,
        device=device,
        compile=compile,
        progress_bar=progress_bar,
        show_traceback=show_traceback,
    )
    return rows, _sha_of(source)


def _sha_of(model):
    return "" if model == "default" else file_sha256(model)[:16]


# -- the summary ---------------------------------------------------------------


def summary_table(rows, *, meta=None):
    """Return the rows as an `~astropy.table.QTable` with the summary columns."""
    from astropy import units as u
    from astropy.table import QTable

    table = QTable(
        [[row[name] for row in rows] for name in SUMMARY_COLUMNS] if rows else None,
        names=SUMMARY_COLUMNS,
        dtype=_SUMMARY_DTYPES,
    )
    table["masked_fraction"].description = "fraction of the frame's pixels masked by AEQA"
    table["threshold"].description = "patch-score threshold"
    table["status"].description = "ok, skipped (output exists) or failed"
    table["seconds"] = table["seconds"] * u.s
    table["seconds"].description = "time spent on the file"
    table.meta.update(meta or {})
    return table


def _same_input(a, b):
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def read_summary_rows(path):
    """
    The rows of an existing ``scores.ecsv``, as dicts (for merging a rerun).

    Raises
    ------
    ValueError
        If the file is not a summary table written by astro_aeqa.
    """
    from astropy.table import Table

    try:
        table = Table.read(path, format="ascii.ecsv")
        missing = [c for c in SUMMARY_COLUMNS if c not in table.colnames]
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        missing, table = [f"unreadable ({exc})"], None
    if missing:
        msg = (
            f"{path}: not a summary table of astro_aeqa (missing {', '.join(map(str, missing))}); "
            "move it away, or pass overwrite=True to replace it"
        )
        raise ValueError(msg)
    rows = []
    for record in table:
        row = {name: record[name] for name in SUMMARY_COLUMNS}
        for name, kind in zip(SUMMARY_COLUMNS, _SUMMARY_DTYPES, strict=True):
            value = row[name]
            value = getattr(value, "value", value)
            row[name] = ("" if kind is str else np.nan) if np.ma.is_masked(value) else kind(value)
        rows.append(row)
    return rows


def _merged_rows(rows, path):
    """The rows of ``path`` with those of the same files replaced by ``rows``; new ones last."""
    old = read_summary_rows(path)
    new = list(rows)
    merged = []
    for row in old:
        match = next((r for r in new if _same_input(r["file"], row["file"])), None)
        if match is None:
            merged.append(row)
        else:
            merged.append(match)
            new.remove(match)
    return merged + new


def write_summary(rows, out_dir, *, meta=None, overwrite=True, merge=False):
    """
    Write ``scores.ecsv`` in ``out_dir`` atomically; return the table and its path.

    With ``merge``, the rows of an existing ``scores.ecsv`` for other files
    are kept (a rerun on some files never drops the rows of the others) and
    those of the same files are replaced.
    """
    path = Path(out_dir) / SUMMARY_NAME
    if merge and path.exists():
        rows = _merged_rows(rows, path)
        overwrite = True
    table = summary_table(rows, meta=meta)
    path = write_table_atomic(table, Path(out_dir) / SUMMARY_NAME, overwrite=overwrite)
    return table, path


def score_files(
    files,
    model,
    *,
    output_dir,
    write_masks=False,
    plots=False,
    n_workers=None,
    scheduler=None,
    threads_per_worker=1,
    processes=True,
    torch_threads=None,
    overwrite=False,
    progress_bar=True,
    hdu=None,
    threshold=None,
    fpr=None,
    device="cpu",
    compile=False,  # noqa: A002 (the torch name)
    compress=False,
):
    """
    Score many FITS files, one task per file, and write the summary table.

    Each file is its own task: a file that cannot be read or scored fails
    alone and gets a row with status ``'failed'`` and the error message.
    On Dask, a worker plugin loads the model once per worker.

    Parameters
    ----------
    files : list of str or `~pathlib.Path`
        The FITS files.
    model : str, `~pathlib.Path` or `~astro_aeqa.AEQualityEvaluator`
        A model file written by `~astro_aeqa.AEQualityEvaluator.save`; on a
        cluster every worker must be able to read it. A fitted evaluator
        is accepted with ``scheduler='synchronous'`` only.
    output_dir : str or `~pathlib.Path`
        Where ``scores.ecsv`` (and the per-file outputs) are written;
        created if needed.
    write_masks : bool, optional
        Write ``<stem>_aeqa.fits`` per file (data, ``MASK``, ``AEQA_SCORE``,
        ``AEQA_FLAGS``; see `~astro_aeqa.io.write_aeqa_fits`). A file whose
        output exists is skipped (status ``'skipped'``, values from the
        output's header) unless ``overwrite``, so a stopped run can be
        started again.
    plots : bool, optional
        Write ``<stem>_aeqa.png`` per file.
    n_workers : int, optional
        Workers of the `~distributed.LocalCluster` started for this call
        (default: one per core). Not with ``scheduler``.
    scheduler : str or `~distributed.Client`, optional
        An existing cluster: a scheduler address (``'tcp://host:8786'``) or
        a client. ``'synchronous'`` scores the files one by one in this
        process, without Dask. Default: a new `~distributed.LocalCluster`,
        closed at the end.
    threads_per_worker : int, optional
        Threads of each local worker (default 1: one file at a time).
    processes : bool, optional
        Local workers are processes (default) or threads of this process.
    torch_threads : int, optional
        Torch threads per worker. Default: the cores divided by the local
        worker threads, so that torch threads times Dask threads do not
        exceed the cores; 1 on an existing cluster.
    overwrite : bool, optional
        Redo files whose outputs exist, and replace ``scores.ecsv``.
        Without it, scoring only (``write_masks=False``) refuses to replace
        an existing ``scores.ecsv``, and masking merges its rows into it
        (the rows of other files are kept).
    progress_bar : bool, optional
        Show a progress bar over the finished files.
    hdu, threshold, fpr : optional
        As in `~astro_aeqa.AEQualityEvaluator.evaluate`.
    device : str, optional
        Where the workers run the network (default ``'cpu'``).
    compile : bool, optional
        Run the network through `torch.compile` (see
        `~astro_aeqa.AEQualityEvaluator`): the first file of each worker waits
        for the compilation (10-40 s on a CPU; it needs a C++ compiler), the
        others run about 1.5x faster, so it pays for batches of tens of
        large frames. Ignored for a fitted evaluator passed as ``model``.
    compress : bool, optional
        With ``write_masks``, write each output's mask and flag planes
        tile-compressed (lossless; see `~astro_aeqa.io.write_aeqa_fits`).

    Returns
    -------
    summary : `~astropy.table.QTable`
        One row per file, in the order given: ``file``, ``score``,
        ``masked_fraction``, ``threshold``, ``status`` (``'ok'``,
        ``'skipped'`` or ``'failed'``), ``error`` and ``seconds``. It is
        also written to ``output_dir/scores.ecsv``.

    Raises
    ------
    FileExistsError
        If ``scores.ecsv`` exists, ``write_masks`` is False and
        ``overwrite`` is False.
    FileNotFoundError
        If the model file does not exist.
    ValueError
        If two files would write outputs of the same name.

    Examples
    --------
    Score a night on two local worker processes, writing masked files::

        from astro_aeqa.parallel import score_files
        summary = score_files(sorted(Path("night").glob("*.fits")), "survey.aeqa.safetensors",
                              output_dir="night_aeqa", write_masks=True, n_workers=2)
        summary[summary["status"] == "failed"]
    """
    paths = [Path(f) for f in files]
    if not paths:
        msg = "files is empty: give at least one FITS file"
        raise ValueError(msg)
    out_dir = Path(output_dir)
    summary = out_dir / SUMMARY_NAME
    if not write_masks and summary.exists() and not overwrite:
        msg = f"{summary}: file exists; pass overwrite=True to replace it or choose another output_dir"
        raise FileExistsError(msg)
    if write_masks or plots:
        check_distinct_stems(paths)
    check_writable_dir(out_dir)  # before any work
    if write_masks and not overwrite and summary.exists():
        read_summary_rows(summary)  # a table the rerun cannot merge into stops it now
    options = {
        "output_dir": str(out_dir.resolve()),
        "write_masks": write_masks,
        "plots": plots,
        "overwrite": overwrite,
        "hdu": hdu,
        "threshold": threshold,
        "fpr": fpr,
        "compress": compress,
    }
    rows, sha = _score_rows(
        paths,
        model,
        options,
        scheduler=scheduler,
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        torch_threads=torch_threads,
        device=device,
        compile=bool(compile),
        progress_bar=progress_bar,
    )
    from . import __version__

    meta = {
        "command": "mask" if write_masks else "score",
        "model": str(model) if not hasattr(model, "evaluate") else model.model_name,
        "model_sha": sha,
        "aeqa_version": __version__,
        "hdu": hdu,
    }
    # a rerun of a masking run keeps the rows of the files it did not redo
    merge = write_masks and not overwrite
    table, _ = write_summary(rows, out_dir, meta=meta, overwrite=True, merge=merge)
    return table
