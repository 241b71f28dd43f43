# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Batch scoring on Dask (`astro_aeqa.parallel`) and ``aeqa score|mask
--n-workers|--scheduler``.

One in-process LocalCluster (two single-threaded workers) serves the module:
worker processes take many seconds to start here.
"""

import shutil
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
    import distributed

    started = []
    monkeypatch.setattr(parallel, "_cpu_count", lambda: 8)
    monkeypatch.setattr(parallel, "_new_local_cluster", lambda *args: started.append(args))

    class FakeClient:
        def __init__(self, cluster):
            pass

    monkeypatch.setattr(distributed, "Client", FakeClient)
    for n_workers, threads_per_worker, expect in [
        (2, 1, (2, 4)),
        (8, 1, (8, 1)),
        (None, 1, (8, 1)),
        (None, 2, (4, 1)),
        (3, 1, (3, 2)),
    ]:
        _, _, torch_threads = parallel._connect(None, n_workers, threads_per_worker, True, None)
        assert (started[-1][0], torch_threads) == expect
        assert started[-1][0] * threads_per_worker * torch_threads <= 8
    # an existing cluster: one torch thread per Dask thread
    assert parallel._connect("tcp://127.0.0.1:1", None, 1, True, None)[2] == 1
    with pytest.raises(ValueError, match="not both"):
        parallel._connect("tcp://127.0.0.1:1", 2, 1, True, None)
    with pytest.raises(ValueError, match="at least 1"):
        parallel._connect(None, 0, 1, True, None)


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


def test_cli_score_n_workers(model_file, night, tiny_evaluator, tmp_path, capsys, monkeypatch):
    # a thread cluster: worker processes are slow to start here
    real = parallel._new_local_cluster
    sizes = []

    def threads_cluster(n_workers, threads_per_worker, processes):
        sizes.append((n_workers, threads_per_worker, processes))
        return real(n_workers, threads_per_worker, False)

    monkeypatch.setattr(parallel, "_new_local_cluster", threads_cluster)
    out = tmp_path / "out"
    status = aeqa(
        "-q", "score", night[0].parent, "--model", model_file, "--output-dir", out,
        "--n-workers", 2, "--fpr", FPR,
    )  # fmt: skip
    assert status == 1  # a file failed
    assert sizes == [(2, 1, True)]
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
