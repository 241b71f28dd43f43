# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Batch scoring on Dask (`astro_aeqa.parallel`) and ``aeqa score|mask
--n-workers|--scheduler``.

One in-process LocalCluster (two single-threaded workers) serves the module:
worker processes take many seconds to start here.
"""

import contextlib
import os
import shutil
import threading
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

pytest.importorskip("distributed")

import astro_aeqa.cli as cli  # noqa: E402
from astro_aeqa import parallel  # noqa: E402

N_FRAMES = 50
CORRUPT = "frame_017.fits"
FPR = 0.1


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            protocol="tcp://",
            host="127.0.0.1",  # pytest-remotedata allows localhost only
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def model_file(tiny_evaluator, tmp_path_factory):
    return tiny_evaluator.save(tmp_path_factory.mktemp("model") / "tiny.aeqa.safetensors")


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """50 frames of 128x128 (five simulated fields, one cloudy, repeated), one of them corrupt."""
    from astro_aeqa.simulation import simulate_image

    root = tmp_path_factory.mktemp("night")
    fields = [
        simulate_image((128, 128), background="cloud" if i == 3 else None, level=0.9, seed=i)
        for i in range(5)
    ]
    for i, field in enumerate(fields):
        field.write(root / f"field_{i}.fits")
    paths = [root / "night" / f"frame_{i:03d}.fits" for i in range(N_FRAMES)]
    paths[0].parent.mkdir()
    for i, path in enumerate(paths):
        if path.name == CORRUPT:
            path.write_bytes(b"SIMPLE  =  this is not FITS" * 20)
        else:
            shutil.copy(root / f"field_{i % 5}.fits", path)
    return paths


def aeqa(*argv):
    names = list(dict.fromkeys([*cli._SUBCOMMANDS, "score", "mask"]))
    with mock.patch.object(cli, "_SUBCOMMANDS", names):
        return cli.main([str(a) for a in argv])


def _check_night(table, night, tiny_evaluator):
    assert len(table) == N_FRAMES
    assert list(table.colnames) == list(parallel.SUMMARY_COLUMNS)
    assert [str(p) for p in night] == list(table["file"])  # rows in the order given
    failed = table["status"] == "failed"
    assert [table["file"][i] for i in np.flatnonzero(failed)] == [str(night[17])], list(
        table["error"][failed]
    )
    assert CORRUPT in table["error"][17] and "FITS" in table["error"][17]
    assert np.isnan(table["score"][17])
    ok = ~failed
    assert np.all(table["status"][ok] == "ok")
    assert np.all(np.isfinite(table["score"][ok]))
    # the workers score exactly as the evaluator does in this process
    for i in (0, 3, 49):
        expected = tiny_evaluator.evaluate(night[i], fpr=FPR)
        assert table["score"][i] == pytest.approx(expected.score, rel=1e-5)
        assert table["masked_fraction"][i] == pytest.approx(expected.masked_fraction)
    # the cloudy field scores worse than the clean ones
    assert table["score"][3] > np.max(table["score"][[0, 1, 2, 4]])


def test_score_files_on_dask_writes_skips_and_overwrites(
    client, model_file, night, tiny_evaluator, tmp_path
):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "out"
    table = parallel.score_files(
        night,
        model_file,
        output_dir=out,
        write_masks=True,
        scheduler=client,
        fpr=FPR,
        progress_bar=False,
    )
    _check_night(table, night, tiny_evaluator)
    assert table["seconds"].unit == "s"
    on_disk = Table.read(out / "scores.ecsv", format="ascii.ecsv")
    assert list(on_disk["status"]) == list(table["status"])
    assert on_disk.meta["model_sha"] == tiny_evaluator.model_sha
    outputs = sorted(out.glob("*_aeqa.fits"))
    assert len(outputs) == N_FRAMES - 1 and not (out / "frame_017_aeqa.fits").exists()
    assert not list(out.glob(".*.tmp"))  # no half-written file left behind
    header = fits.getheader(out / "frame_003_aeqa.fits")
    assert header["AEQASCOR"] == pytest.approx(table["score"][3], rel=1e-6)
    # the workers' torch threads were set for the run and given back after it
    assert torch.get_num_threads() == threads
    assert not any(name.startswith("astro_aeqa") for name in _worker_plugins(client))

    # a rerun skips the finished files and tries the failed one again
    stamps = [p.stat().st_mtime_ns for p in outputs]
    again = parallel.score_files(
        night,
        model_file,
        output_dir=out,
        write_masks=True,
        scheduler=client,
        fpr=FPR,
        progress_bar=False,
    )
    assert np.sum(again["status"] == "skipped") == N_FRAMES - 1
    assert again["status"][17] == "failed"
    np.testing.assert_allclose(again["score"], table["score"], rtol=1e-6)
    assert [p.stat().st_mtime_ns for p in outputs] == stamps

    # overwrite=True redoes them, here with another threshold
    redone = parallel.score_files(
        night[:4],
        model_file,
        output_dir=out,
        write_masks=True,
        overwrite=True,
        threshold=1e9,
        scheduler=client,
        progress_bar=False,
    )
    assert list(redone["status"]) == ["ok"] * 4
    assert np.all(redone["masked_fraction"] == 0)
    assert fits.getheader(out / "frame_000_aeqa.fits")["AEQATHR"] == 1e9


def _worker_plugins(client):
    return {
        name
        for plugins in client.run(lambda dask_worker: list(dask_worker.plugins)).values()
        for name in plugins
    }


def test_torch_threads_are_capped_on_the_workers(client, model_file):
    import torch

    threads = torch.get_num_threads()
    name = parallel._register_plugin(client, str(model_file), "cpu", 1)
    try:
        seen = client.run(lambda: torch.get_num_threads())
        assert set(seen.values()) == {1}
        loaded = client.run(lambda dask_worker: dask_worker.plugins[name].evaluator is not None)
        assert all(loaded.values())
    finally:
        client.unregister_worker_plugin(name)
    assert torch.get_num_threads() == threads


def test_local_cluster_sizes(monkeypatch):
    """Torch threads times worker threads fill the cores and never exceed them."""
    monkeypatch.setattr(parallel, "_cpu_count", lambda: 8)
    for n_workers, threads_per_worker, expect in [
        (2, 1, (2, 4)),
        (8, 1, (8, 1)),
        (None, 1, (8, 1)),
        (None, 2, (4, 1)),
        (3, 1, (3, 2)),
        (16, 1, (16, 1)),  # more workers than cores: one thread each, the least there is
    ]:
        sizes = parallel._local_sizes(n_workers, threads_per_worker, None)
        assert sizes == expect
        if sizes[0] * threads_per_worker <= 8:
            assert sizes[0] * threads_per_worker * sizes[1] <= 8
    with pytest.raises(ValueError, match="at least 1"):
        parallel._local_sizes(0, 1, None)
    # an existing cluster: one torch thread per Dask thread
    with contextlib.ExitStack() as stack:
        with pytest.raises(ValueError, match="not both"):
            parallel._connect("tcp://127.0.0.1:1", 2, 1, True, None, stack)


def test_worker_environment_sizes_every_thread_pool(monkeypatch):
    """Worker processes start with BLAS/OpenMP pools of the torch threads, without malloc trim."""
    import dask

    default = dask.config.get("distributed.nanny.pre-spawn-environ")
    assert "MALLOC_TRIM_THRESHOLD_" in default  # what distributed sets, and is taken out
    env = parallel._worker_environment(2)
    assert "MALLOC_TRIM_THRESHOLD_" not in env
    for name in parallel.THREAD_VARIABLES:
        assert env[name] == "2"
    # dask's other start-up variables are kept
    assert set(env) == (set(default) - {"MALLOC_TRIM_THRESHOLD_"}) | set(parallel.THREAD_VARIABLES)


@pytest.mark.parametrize("torch_threads", [1, 2])
def test_files_are_scored_with_the_workers_thread_budget(
    client, model_file, night, tmp_path, monkeypatch, torch_threads
):
    """Torch, and the evaluator's own scoring threads, use the worker's share of the cores."""
    import torch

    from astro_aeqa.nn import Reconstructor

    seen = []
    real = parallel._file_row

    def recording(path, job):
        seen.append((torch.get_num_threads(), Reconstructor.n_threads()))
        return real(path, job)

    monkeypatch.setattr(parallel, "_file_row", recording)
    threads = torch.get_num_threads()
    table = parallel.score_files(
        night[:4],
        model_file,
        output_dir=tmp_path,
        scheduler=client,
        torch_threads=torch_threads,
        fpr=FPR,
        progress_bar=False,
    )
    assert list(table["status"]) == ["ok"] * 4
    assert seen == [(torch_threads, torch_threads)] * 4
    assert torch.get_num_threads() == threads  # this thread's setting is untouched


class _CountingClient:
    """A client whose submit counts the tasks submitted."""

    def __init__(self, client):
        self._client = client
        self.submitted = 0

    def submit(self, *args, **kwargs):
        self.submitted += 1
        return self._client.submit(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def _sleep_then_echo(item, *, seconds):
    time.sleep(seconds.get(item, 0))
    return item


def test_stream_keeps_a_window_of_tasks_and_yields_them_as_they_end(client):
    counting = _CountingClient(client)
    items = [f"f{i}.fits" for i in range(9)]
    order, in_flight = [], []
    tasks = parallel._stream(counting, _sleep_then_echo, items, window=3, seconds={"f0.fits": 0.5})
    for i, future in tasks:
        in_flight.append(counting.submitted - len(order) - 1)  # submitted, not ended
        assert future.result() == items[i]
        order.append(i)
    assert sorted(order) == list(range(9))  # each file once
    assert order[0] != 0  # the slow first file did not hold back the others
    assert max(in_flight) <= 3 and counting.submitted == 9
    # by default the window is two files per worker thread (here 2 threads)
    assert parallel._window(client, 1) == 4


def test_rows_come_back_in_the_order_given(client, model_file, night, tmp_path, monkeypatch):
    real = parallel._row_on_worker

    def first_is_slow(path, plugin_name, options):
        if path.endswith("frame_000.fits"):
            time.sleep(0.5)
        return real(path, plugin_name, options)

    monkeypatch.setattr(parallel, "_row_on_worker", first_is_slow)
    files = night[:6]
    table = parallel.score_files(
        files, model_file, output_dir=tmp_path, scheduler=client, fpr=FPR, progress_bar=False
    )
    assert list(table["file"]) == [str(p) for p in files]
    assert np.all(table["status"] == "ok")


def _children():
    """This process's child processes, but Python's resource tracker (one per interpreter)."""
    import psutil

    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "resource_tracker" not in " ".join(_cmdline(child))
    ]


def _cmdline(process):
    import psutil

    try:
        return process.cmdline()
    except psutil.Error:
        return []


def test_local_worker_processes_end_with_the_call(model_file, night, tmp_path):
    """score_files(n_workers=2) starts two worker processes and leaves none behind."""
    before = _children()
    environ = {name: os.environ.get(name) for name in parallel.THREAD_VARIABLES}
    table = parallel.score_files(
        night[15:19], model_file, output_dir=tmp_path, n_workers=2, fpr=FPR, progress_bar=False
    )
    assert list(table["status"]) == ["ok", "ok", "failed", "ok"]
    assert _children() == before
    # the workers' start-up environment did not leak into this process
    assert {name: os.environ.get(name) for name in parallel.THREAD_VARIABLES} == environ


def test_worker_processes_are_ended_if_the_cluster_does_not_stop_them(monkeypatch):
    """The last resort of the shutdown: a child that outlives the cluster is ended."""
    import multiprocessing

    before = set(multiprocessing.active_children())
    stuck = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    stuck.start()
    monkeypatch.setattr(stuck, "join", _short_join(stuck.join))
    t0 = time.perf_counter()
    parallel._reap_children(before)
    assert not stuck.is_alive() and stuck.exitcode is not None
    assert time.perf_counter() - t0 < 30


def _short_join(join):
    def short(timeout=None):
        return join(timeout=None if timeout is None else min(timeout, 0.2))

    return short


def test_a_lost_task_fails_alone(client, model_file, night, tmp_path, monkeypatch):
    """A task that dies on the worker (not a read error) gives a failed row, not a crash."""
    real = parallel._row_on_worker

    def dies_on_two(path, plugin_name, options):
        if path.endswith("frame_002.fits"):
            raise MemoryError("worker ran out of memory")
        return real(path, plugin_name, options)

    monkeypatch.setattr(parallel, "_row_on_worker", dies_on_two)
    table = parallel.score_files(
        night[:4], model_file, output_dir=tmp_path, scheduler=client, fpr=FPR, progress_bar=False
    )
    assert list(table["status"]) == ["ok", "ok", "failed", "ok"]
    assert "out of memory" in table["error"][2]


def test_score_files_synchronous_and_errors(tiny_evaluator, model_file, night, tmp_path):
    table = parallel.score_files(
        night[:3],
        tiny_evaluator,
        output_dir=tmp_path,
        scheduler="synchronous",
        fpr=FPR,
        progress_bar=False,
    )
    assert list(table["status"]) == ["ok", "ok", "ok"]
    # scoring only: the table is not replaced without overwrite
    with pytest.raises(FileExistsError, match="overwrite"):
        parallel.score_files(night[:3], model_file, output_dir=tmp_path, scheduler="synchronous")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        parallel.score_files(night[:3], tmp_path / "nope.safetensors", output_dir=tmp_path / "x")
    with pytest.raises(TypeError, match="file path"):
        parallel.score_files(night[:3], tiny_evaluator, output_dir=tmp_path / "y", n_workers=1)
    with pytest.raises(ValueError, match="same name"):
        parallel.score_files(
            [night[0], tmp_path / "elsewhere" / night[0].name],
            model_file,
            output_dir=tmp_path / "z",
            write_masks=True,
            scheduler="synchronous",
        )


def test_score_files_masking_rerun_merges_and_checks_the_directory(tiny_evaluator, night, tmp_path):
    """Issue 17: a masking rerun on one file dropped the other rows of scores.ecsv."""
    kwargs = dict(write_masks=True, scheduler="synchronous", fpr=FPR, progress_bar=False)
    parallel.score_files(night[:3], tiny_evaluator, output_dir=tmp_path, **kwargs)
    (tmp_path / f"{night[1].stem}_aeqa.fits").unlink()
    table = parallel.score_files(night[1:2], tiny_evaluator, output_dir=tmp_path, **kwargs)
    assert [Path(f).name for f in table["file"]] == [p.name for p in night[:3]]
    assert list(table["status"]) == ["ok", "ok", "ok"]
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(NotADirectoryError, match="exists and is a file"):
        parallel.score_files(night[:1], tiny_evaluator, output_dir=tmp_path / "taken", **kwargs)


def test_serial_mask_batches_read_and_write_beside_the_scoring(tiny_evaluator, night, tmp_path):
    # the next file is read and the last written on a second thread: the
    # rows, their order, the errors and the outputs are those of one file at
    # a time
    files = [p for p in night if p.name != CORRUPT][:4]
    files.insert(2, next(p for p in night if p.name == CORRUPT))
    one_by_one = tmp_path / "one"
    one_by_one.mkdir()
    for path in files[:2] + files[3:]:
        tiny_evaluator.write_masked(path, one_by_one / f"{path.stem}_aeqa.fits", fpr=FPR)
    out = tmp_path / "batch"
    out.mkdir()
    shutil.copy(one_by_one / f"{files[3].stem}_aeqa.fits", out)  # done already: skipped
    kwargs = dict(write_masks=True, scheduler="synchronous", fpr=FPR, progress_bar=False)
    with mock.patch.object(parallel, "_pipelined_rows", wraps=parallel._pipelined_rows) as spy:
        table = parallel.score_files(files, tiny_evaluator, output_dir=out, **kwargs)
    assert spy.call_count == 1
    assert [Path(f).name for f in table["file"]] == [p.name for p in files]
    assert list(table["status"]) == ["ok", "ok", "failed", "skipped", "ok"]
    assert CORRUPT in table["error"][2]
    assert np.all(table["seconds"][[0, 1, 4]] > 0)
    for path in files[:2] + files[3:]:
        name = f"{path.stem}_aeqa.fits"
        with fits.open(out / name) as got, fits.open(one_by_one / name) as expected:
            for ext in ("PRIMARY", "MASK", "AEQA_SCORE", "AEQA_FLAGS"):
                np.testing.assert_array_equal(got[ext].data, expected[ext].data)
        row = table[[Path(f).name for f in table["file"]].index(path.name)]
        assert row["score"] == fits.getval(one_by_one / name, "AEQASCOR")
    assert not (out / f"{Path(CORRUPT).stem}_aeqa.fits").exists()


def test_mask_batches_write_compressed_planes(tiny_evaluator, night, tmp_path):
    # compress=True reaches the serial batch's writer and process_file (each Dask task)
    files = [p for p in night if p.name != CORRUPT][:2]
    kwargs = dict(write_masks=True, scheduler="synchronous", fpr=FPR, progress_bar=False)
    parallel.score_files(
        files, tiny_evaluator, output_dir=tmp_path / "batch", compress=True, **kwargs
    )
    parallel.process_file(
        files[0],
        tiny_evaluator,
        output_dir=tmp_path / "task",
        write_masks=True,
        fpr=FPR,
        compress=True,
    )
    tiny_evaluator.write_masked(files[0], tmp_path / "plain.fits", fpr=FPR)
    name = f"{files[0].stem}_aeqa.fits"
    with fits.open(tmp_path / "plain.fits") as plain:
        for out in (tmp_path / "batch" / name, tmp_path / "task" / name):
            with fits.open(out) as got:
                for ext in ("MASK", "AEQA_FLAGS"):
                    assert isinstance(got[ext], fits.CompImageHDU)
                    np.testing.assert_array_equal(got[ext].data, plain[ext].data)
    with fits.open(tmp_path / "batch" / f"{files[1].stem}_aeqa.fits") as second:
        assert isinstance(second["MASK"], fits.CompImageHDU)


def test_serial_mask_batch_sets_no_warning_filter_on_its_writer_thread(
    tiny_evaluator, night, tmp_path, monkeypatch
):
    # warning filters are process-wide: a second thread entering
    # catch_warnings while another is in it would restore the wrong filters
    entered = []
    real = warnings.catch_warnings

    class Recording(real):
        def __enter__(self):
            entered.append(threading.current_thread().name)
            return super().__enter__()

    monkeypatch.setattr(warnings, "catch_warnings", Recording)
    filters = list(warnings.filters)
    files = [p for p in night if p.name != CORRUPT][:3]
    kwargs = dict(write_masks=True, scheduler="synchronous", fpr=FPR, progress_bar=False)
    table = parallel.score_files(files, tiny_evaluator, output_dir=tmp_path, **kwargs)
    assert list(table["status"]) == ["ok"] * 3
    assert entered  # reading and building the outputs set filters...
    # ...on this thread only: not the writer, nor the scoring's threads
    assert set(entered) == {threading.current_thread().name}
    assert warnings.filters == filters


def test_serial_mask_batch_reports_a_failed_write_in_its_row(tiny_evaluator, night, tmp_path):
    files = [p for p in night if p.name != CORRUPT][:3]
    real = tiny_evaluator._write_output

    def write(hdulist, path, *, overwrite):
        if files[1].stem in Path(path).name:
            raise OSError(f"{path}: no space left on device")
        real(hdulist, path, overwrite=overwrite)

    kwargs = dict(write_masks=True, scheduler="synchronous", fpr=FPR, progress_bar=False)
    with mock.patch.object(tiny_evaluator, "_write_output", side_effect=write):
        table = parallel.score_files(files, tiny_evaluator, output_dir=tmp_path, **kwargs)
    assert list(table["status"]) == ["ok", "failed", "ok"]
    assert "no space left" in table["error"][1]
    assert np.all(table["seconds"] > 0)  # the failed row counts its reading and scoring
    assert not (tmp_path / f"{files[1].stem}_aeqa.fits").exists()
    assert (tmp_path / f"{files[2].stem}_aeqa.fits").exists()


@pytest.mark.parametrize("n_files", [1, 3])
def test_mask_batch_skips_an_output_with_undefined_keywords(
    tiny_evaluator, night, tmp_path, n_files
):
    # an existing output whose AEQA cards are undefined (or not numbers) is
    # skipped with NaN values, not a TypeError that stops the batch (one
    # file goes through process_file, several through the batch pipeline)
    files = [p for p in night if p.name != CORRUPT][:n_files]
    done = tmp_path / f"{files[0].stem}_aeqa.fits"
    header = fits.Header()
    header["AEQASCOR"] = fits.card.UNDEFINED
    header["AEQAMFR"] = "n/a"
    fits.PrimaryHDU(np.zeros((4, 4), np.float32), header).writeto(done)
    kwargs = dict(write_masks=True, scheduler="synchronous", fpr=FPR, progress_bar=False)
    table = parallel.score_files(files, tiny_evaluator, output_dir=tmp_path, **kwargs)
    assert table["status"][0] == "skipped"
    assert np.isnan(table["score"][0]) and np.isnan(table["masked_fraction"][0])
    assert list(table["status"][1:]) == ["ok"] * (n_files - 1)


def test_cli_score_n_workers(model_file, night, tiny_evaluator, tmp_path, capsys, monkeypatch):
    # a thread cluster: worker processes are slow to start here
    real = parallel._new_local_cluster
    sizes = []

    def threads_cluster(n_workers, threads_per_worker, processes, torch_threads):
        sizes.append((n_workers, threads_per_worker, processes, torch_threads))
        return real(n_workers, threads_per_worker, False, torch_threads)

    monkeypatch.setattr(parallel, "_new_local_cluster", threads_cluster)
    out = tmp_path / "out"
    status = aeqa(
        "-q", "score", night[0].parent, "--model", model_file, "--output-dir", out,
        "--n-workers", 2, "--fpr", FPR,
    )  # fmt: skip
    assert status == 1  # a file failed
    assert sizes == [(2, 1, True, max(1, parallel._cpu_count() // 2))]
    captured = capsys.readouterr()
    assert CORRUPT in captured.err and "Traceback" not in captured.err
    assert "1 of 50 files failed" in captured.err
    table = Table.read(out / "scores.ecsv", format="ascii.ecsv")
    _check_night(table, night, tiny_evaluator)
    assert table.meta["command"] == "score" and table.meta["model_sha"] == tiny_evaluator.model_sha


def test_cli_mask_scheduler_address(client, model_file, night, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["mask", *night[15:19], "--model", model_file, "--output-dir", out, "--fpr", FPR]
    address = client.scheduler.address
    assert aeqa("-q", *args, "--scheduler", address) == 1
    table = Table.read(out / "scores.ecsv", format="ascii.ecsv")
    assert list(table["status"]) == ["ok", "ok", "failed", "ok"]
    assert aeqa(*args, "--scheduler", address) == 1
    assert "3 skipped, 1 failed" in capsys.readouterr().out
    assert aeqa("-q", *args, "--scheduler", address, "--overwrite") == 1
    table = Table.read(out / "scores.ecsv", format="ascii.ecsv")
    assert list(table["status"]) == ["ok", "ok", "failed", "ok"]
    # --n-workers and --scheduler exclude each other
    with pytest.raises(SystemExit):
        aeqa(*args, "--scheduler", address, "--n-workers", 2)
    assert aeqa("-q", *args, "--n-workers", 0) == 2
    assert "--n-workers must be at least 1" in capsys.readouterr().err


def test_cli_without_distributed_is_a_one_line_error(model_file, night, tmp_path, capsys):
    with mock.patch.dict("sys.modules", {"distributed": None}):
        status = aeqa(
            "score", night[0], "--model", model_file, "--output-dir", tmp_path, "--n-workers", 2
        )
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'astro_aeqa[parallel]'" in err[0]


def test_compile_option_reaches_the_evaluator(monkeypatch, tmp_path):
    """--compile loads the evaluator with compile=True (the compilation itself is not run)."""
    import astro_aeqa.cli._inputs as inputs

    seen = {}

    def fake_load(model, *, device=None, compile=False):  # noqa: A002
        seen["compile"] = compile
        raise FileNotFoundError("stop here")

    monkeypatch.setattr(inputs, "load_evaluator", fake_load)
    from astro_aeqa.cli import main

    frame = tmp_path / "f.fits"
    frame.write_bytes(b"")
    assert main(["score", str(frame), "--compile", "--output-dir", str(tmp_path / "o")]) == 2
    assert seen == {"compile": True}
