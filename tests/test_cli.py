# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
``aeqa train``, ``score``, ``mask`` and ``info``, driven through ``main(argv)``.

A small model is trained once for the module with ``aeqa train`` itself on
three simulated 128x128 frames.
"""

import hashlib
import json
import os
import shutil
from unittest import mock

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table

import astro_aeqa.cli as cli
from astro_aeqa.cli._inputs import expand_inputs, fits_stem
from astro_aeqa.exceptions import InputDataError

_MINE = ["train", "score", "mask", "info"]
_COLUMNS = ["file", "score", "masked_fraction", "threshold", "status", "error", "seconds"]
# The tiny model has few calibration patches: a large fpr keeps its threshold finite.
_FPR = ["--fpr", "0.2"]


def aeqa(*argv):
    """Run ``aeqa argv`` through `astro_aeqa.cli.main` with these subcommands registered."""
    names = list(dict.fromkeys([*cli._SUBCOMMANDS, *_MINE]))
    with mock.patch.object(cli, "_SUBCOMMANDS", names):
        return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Three clean reference frames and a cloudy one, 128x128."""
    from astro_aeqa.simulation import simulate_image

    root = tmp_path_factory.mktemp("frames")
    refs = root / "refs"
    refs.mkdir()
    for i in range(3):
        simulate_image((128, 128), seed=i).write(refs / f"ref_{i}.fits")
    simulate_image((128, 128), background="cloud", level=0.9, seed=7).write(root / "cloud.fits")
    return root


@pytest.fixture(scope="module")
def model(frames, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.aeqa.safetensors"
    status = aeqa(
        "-q",
        "train",
        frames / "refs",
        "--output",
        path,
        "--model-preset",
        "small",
        "--n-epochs",
        1,
        "--steps-per-epoch",
        2,
        "--batch-size",
        2,
        "--patch-size",
        32,
        "--tile-size",
        64,
        "--crop-size",
        64,
        "--val-fraction",
        0.5,
        "--device",
        "cpu",
    )
    assert status == 0
    return path


def _assert_one_line_error(err, command):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"aeqa {command}: error: ")
    assert "Traceback" not in err


# -- inputs ------------------------------------------------------------------


def test_expand_inputs_dirs_globs_lists(tmp_path, monkeypatch):
    for name in ["b.fits", "a.fit", "c.fts", "d.fits.gz", "notes.txt", "e.FITS"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.fits").write_bytes(b"")
    found = [p.name for p in expand_inputs([str(tmp_path)])]
    assert found == ["a.fit", "b.fits", "c.fts", "d.fits.gz", "e.FITS"]
    assert [p.name for p in expand_inputs([str(tmp_path / "*.fit*")])] == [
        "a.fit",
        "b.fits",
        "d.fits.gz",
    ]
    # a list file: comments, blank lines, paths relative to the list; each file once
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "files.txt").write_text(
        f"# night 1\n../b.fits  # the best\n\n../sub/x.fits\n{tmp_path / 'b.fits'}\n"
    )
    monkeypatch.chdir(tmp_path / "sub")
    paths = expand_inputs([f"@{lists / 'files.txt'}", str(tmp_path / "c.fts")])
    assert [p.name for p in paths] == ["b.fits", "x.fits", "c.fts"]
    assert all(p.exists() for p in paths)


@pytest.mark.parametrize("kind", ["missing", "empty_dir", "no_match", "empty_list", "no_list"])
def test_expand_inputs_errors(tmp_path, kind):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no FITS here")
    (tmp_path / "list.txt").write_text("# nothing\n\n")
    spec, error, text = {
        "missing": (str(tmp_path / "nope.fits"), FileNotFoundError, "no such file"),
        "empty_dir": (str(tmp_path / "empty"), InputDataError, "no FITS file"),
        "no_match": (str(tmp_path / "*.fits"), InputDataError, "no file matches"),
        "empty_list": (f"@{tmp_path / 'list.txt'}", InputDataError, "names no file"),
        "no_list": (f"@{tmp_path / 'other.txt'}", FileNotFoundError, "list file"),
    }[kind]
    with pytest.raises(error, match=text):
        expand_inputs([spec])


def test_fits_stem():
    assert fits_stem("/a/b/night.001.fits.gz") == "night.001"
    assert fits_stem("x.FIT") == "x"
    assert fits_stem("x.fts") == "x"


@pytest.mark.parametrize("command", ["score", "mask"])
@pytest.mark.parametrize("kind", ["missing", "empty_dir", "no_match"])
def test_bad_inputs_one_line_exit_2(tmp_path, capsys, model, command, kind):
    (tmp_path / "empty").mkdir()
    spec = {
        "missing": tmp_path / "nope.fits",
        "empty_dir": tmp_path / "empty",
        "no_match": tmp_path / "empty" / "*.fits",
    }[kind]
    status = aeqa("-q", command, spec, "--model", model, "--output-dir", tmp_path / "out")
    assert status == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err, command)
    assert str(spec) in err
    assert not (tmp_path / "out").exists()


def test_traceback_flag_shows_the_traceback(tmp_path, model):
    with pytest.raises(FileNotFoundError, match="no such file"):
        aeqa("--traceback", "-q", "score", tmp_path / "nope.fits", "--model", model)


# the shipped model has no reference of this simulated camera: a cloudy frame warns
@pytest.mark.filterwarnings("ignore:.*more than half of the frame's patches")
def test_score_uses_the_shipped_model_by_default(frames, tmp_path, capsys):
    out = tmp_path / "out"
    assert aeqa("-q", "score", frames / "cloud.fits", "--output-dir", out) == 0
    table = Table.read(out / "scores.ecsv")
    assert list(table["status"]) == ["ok"] and table["score"][0] > 0


# -- train and info ----------------------------------------------------------


def test_info_prints_the_model_card(model, capsys):
    assert aeqa("info", model) == 0
    out = capsys.readouterr().out
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    assert sha in out
    assert "small" in out and "222,400" in out
    assert "patch size      32 px" in out
    assert "tile size       64 px" in out
    assert "normalisation   noise" in out and "sky term        True" in out
    assert "star-aware      True" in out and "PSF term        " in out
    assert "clean reference patch scores; quantiles 50.0%" in out and "99.9%" in out
    # the tiny calibration set cannot calibrate fpr=0.005, and the card says so
    assert "too few for the default fpr 0.005 (it needs 199)" in out
    assert "ref_0.fits" in out  # provenance: the reference files
    assert "astro_aeqa      " in out


def test_info_json(model, capsys):
    assert aeqa("info", "--json", model) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["patch_size"] == 32 and card["architecture"] == "small"
    assert card["n_parameters"] == 222400
    cal = card["calibration"]
    assert cal["n_reference"] > 0
    q = cal["quantiles"]
    assert q["0.5"] <= q["0.99"] <= q["0.999"]
    assert card["training"]["n_frames"] == 3
    assert card["training"]["n_epochs_run"] == 1


@pytest.mark.parametrize("content", ["text", "safetensors"])
def test_info_not_our_model(tmp_path, capsys, content):
    path = tmp_path / "other.safetensors"
    if content == "text":
        path.write_text("not a model at all\n")
    else:
        from safetensors.numpy import save_file

        save_file({"w": np.zeros(3, dtype=np.float32)}, str(path))
    assert aeqa("info", path) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err, "info")
    assert str(path) in err


def test_train_refuses_to_overwrite(frames, model, capsys):
    before = model.read_bytes()
    assert aeqa("-q", "train", frames / "refs", "--output", model, "--n-epochs", 1) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err, "train")
    assert "--overwrite" in err
    assert model.read_bytes() == before
    assert (
        aeqa(
            "-q", "train", frames / "refs", "--output", model.parent / "new.safetensors", "--resume"
        )
        == 2
    )
    _assert_one_line_error(capsys.readouterr().err, "train")


def test_train_init_fine_tunes_the_given_weights(frames, model, tmp_path, capsys):
    """--init trains the loaded network in place: with a vanishing learning rate the
    weights stay those of the initial model (a fresh network would not have them)."""
    from safetensors.numpy import load_file

    out = tmp_path / "tuned.safetensors"
    status = aeqa(
        "-q",
        "train",
        f"{frames / 'refs'}/ref_0*.fits",
        "--init",
        model,
        "--output",
        out,
        "--n-epochs",
        1,
        "--steps-per-epoch",
        1,
        "--batch-size",
        2,
        "--learning-rate",
        1e-12,
        "--val-fraction",
        0.5,
        "--seed",
        1,
    )
    assert status == 0
    capsys.readouterr()
    initial, tuned = load_file(str(model)), load_file(str(out))
    assert initial.keys() == tuned.keys()
    for key in initial:
        np.testing.assert_allclose(tuned[key], initial[key], rtol=0, atol=1e-6)
    assert aeqa("info", "--json", out) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["patch_size"] == 32 and card["tile_size"] == 64
    assert card["training"]["init"]["file"] == model.name
    assert card["training"]["seed"] == 1
    # the architecture comes from the --init model
    assert (
        aeqa(
            "-q",
            "train",
            frames / "refs",
            "--init",
            model,
            "--output",
            tmp_path / "x",
            "--patch-size",
            64,
        )
        == 2
    )
    assert "--patch-size cannot be combined with --init" in capsys.readouterr().err


# -- score ---------------------------------------------------------------------


def test_score_globs_dirs_lists_and_plots(frames, model, tmp_path, capsys):
    listing = tmp_path / "night.txt"
    listing.write_text(
        f"# the cloudy frame\n{frames / 'cloud.fits'}\n{frames / 'refs' / 'ref_1.fits'}\n"
    )
    out = tmp_path / "out"
    status = aeqa(
        "score",
        frames / "refs",
        f"{frames / 'refs'}/ref_[01].fits",
        f"@{listing}",
        "--model",
        model,
        "--output-dir",
        out,
        "--plots",
        *_FPR,
    )
    assert status == 0
    captured = capsys.readouterr()
    assert "4 files: 4 ok" in captured.out
    assert str(out / "scores.ecsv") in captured.out
    table = Table.read(out / "scores.ecsv", format="ascii.ecsv")
    assert table.colnames == _COLUMNS
    assert [os.path.basename(f) for f in table["file"]] == [
        "ref_0.fits",
        "ref_1.fits",
        "ref_2.fits",
        "cloud.fits",
    ]
    assert list(table["status"]) == ["ok"] * 4
    assert np.all(np.isfinite(table["score"])) and np.all(table["score"] > 0)
    assert np.all((table["masked_fraction"] >= 0) & (table["masked_fraction"] <= 1))
    assert len(set(table["threshold"])) == 1  # calibrated on the model's references
    assert table.meta["model_sha"] and table.meta["command"] == "score"
    for stem in ["ref_0", "ref_1", "ref_2", "cloud"]:
        assert (out / f"{stem}_aeqa.png").read_bytes()[:4] == b"\x89PNG"
    # the table is not replaced without --overwrite
    assert aeqa("-q", "score", frames / "refs", "--model", model, "--output-dir", out) == 2
    _assert_one_line_error(capsys.readouterr().err, "score")


def test_score_bad_files_fail_alone(frames, model, tmp_path, capsys):
    data = tmp_path / "night"
    data.mkdir()
    shutil.copy(frames / "refs" / "ref_0.fits", data / "a_good.fits")
    (data / "b_corrupt.fits").write_bytes(b"SIMPLE  =  this is not FITS" * 20)
    fits.PrimaryHDU(np.zeros((2, 64, 64), np.float32)).writeto(data / "c_cube.fits")
    shutil.copy(frames / "cloud.fits", data / "d_good.fits")
    out = tmp_path / "out"
    status = aeqa("-q", "score", data, "--model", model, "--output-dir", out, *_FPR)
    assert status == 1
    err = capsys.readouterr().err
    assert "b_corrupt.fits" in err and "c_cube.fits" in err
    assert "Traceback" not in err
    table = Table.read(out / "scores.ecsv", format="ascii.ecsv")
    assert list(table["status"]) == ["ok", "failed", "failed", "ok"]
    assert np.isfinite(table["score"][[0, 3]]).all()
    assert np.isnan(table["score"][[1, 2]]).all()
    assert "b_corrupt.fits" in table["error"][1]
    assert "2-D" in table["error"][2] or "shape" in table["error"][2]
    assert np.ma.is_masked(table["error"][0]) or table["error"][0] == ""  # ECSV reads "" as masked
    # --traceback shows the traceback of each failed file, and still does the others
    status = aeqa(
        "--traceback",
        "-q",
        "score",
        data,
        "--model",
        model,
        "--output-dir",
        out,
        "--overwrite",
        *_FPR,
    )
    assert status == 1
    assert "Traceback" in capsys.readouterr().err


def test_score_hdu(frames, model, tmp_path, capsys):
    data = fits.getdata(frames / "refs" / "ref_2.fits")
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(data, name="SCI"),
            fits.ImageHDU(data[::-1].copy(), name="OTHER"),
        ]
    )
    mef = tmp_path / "mef.fits"
    hdul.writeto(mef)
    scores = {}
    for hdu in [None, "1", "SCI", "2"]:
        out = tmp_path / f"out_{hdu}"
        extra = [] if hdu is None else ["--hdu", hdu]
        status = aeqa("-q", "score", mef, "--model", model, "--output-dir", out, *extra, *_FPR)
        table = Table.read(out / "scores.ecsv", format="ascii.ecsv")
        scores[hdu] = (status, table["status"][0], table["score"][0], table["error"][0])
    capsys.readouterr()
    assert scores[None][:2] == (1, "failed")
    assert "--hdu" in scores[None][3]  # two image extensions: the error says how to choose
    assert scores["1"][:2] == scores["SCI"][:2] == scores["2"][:2] == (0, "ok")
    assert scores["1"][2] == scores["SCI"][2]


# -- mask ----------------------------------------------------------------------


def test_mask_writes_skips_and_overwrites(frames, model, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "mask",
        frames / "refs" / "ref_0.fits",
        frames / "cloud.fits",
        "--model",
        model,
        "--output-dir",
        out,
    ]
    assert aeqa("-q", *args, *_FPR) == 0
    table = Table.read(out / "scores.ecsv", format="ascii.ecsv")
    assert list(table["status"]) == ["ok", "ok"]
    products = [out / "ref_0_aeqa.fits", out / "cloud_aeqa.fits"]
    for path, row in zip(products, table, strict=True):
        with fits.open(path) as hdul:
            assert {"MASK", "AEQA_SCORE", "AEQA_FLAGS"} <= {h.name for h in hdul}
            header = hdul[0].header
            assert header["AEQASCOR"] == pytest.approx(row["score"])
            assert header["AEQAMFR"] == pytest.approx(row["masked_fraction"])
            assert header["AEQATHR"] == pytest.approx(row["threshold"])
            assert hdul["AEQA_SCORE"].data.shape == (4, 4)
        ccd = CCDData.read(path)
        assert ccd.shape == (128, 128) and ccd.mask is not None
    np.testing.assert_array_equal(fits.getdata(products[1]), fits.getdata(frames / "cloud.fits"))
    stamps = [p.stat().st_mtime_ns for p in products]

    # rerun: outputs exist, so the files are skipped; the table still has their scores
    assert aeqa(*args, *_FPR) == 0
    captured = capsys.readouterr()
    assert "2 files: 2 skipped" in captured.out
    again = Table.read(out / "scores.ecsv", format="ascii.ecsv")
    assert list(again["status"]) == ["skipped", "skipped"]
    np.testing.assert_allclose(again["score"], table["score"], rtol=1e-6)
    assert [p.stat().st_mtime_ns for p in products] == stamps

    # --overwrite redoes them
    assert aeqa("-q", *args, "--overwrite", "--threshold", 1e9) == 0
    redone = Table.read(out / "scores.ecsv", format="ascii.ecsv")
    assert list(redone["status"]) == ["ok", "ok"]
    assert np.all(redone["threshold"] == 1e9) and np.all(redone["masked_fraction"] == 0)
    assert fits.getheader(products[0])["AEQATHR"] == 1e9


def test_mask_compress_writes_the_same_planes_compressed(frames, model, tmp_path):
    frame = frames / "cloud.fits"
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    common = ["mask", frame, "--model", model, *_FPR]
    assert aeqa("-q", *common, "--output-dir", plain) == 0
    assert aeqa("-q", *common, "--output-dir", packed, "--compress") == 0
    with fits.open(plain / "cloud_aeqa.fits") as a, fits.open(packed / "cloud_aeqa.fits") as b:
        assert [h.name for h in b] == [h.name for h in a]
        for name in ("MASK", "AEQA_FLAGS"):
            assert isinstance(b[name], fits.CompImageHDU) and not isinstance(
                a[name], fits.CompImageHDU
            )
            np.testing.assert_array_equal(b[name].data, a[name].data)
        np.testing.assert_array_equal(b[0].data, fits.getdata(frame))
    assert fits.getdata(plain / "cloud_aeqa.fits", "MASK").any()  # the planes hold a verdict


def test_mask_bad_file_and_hdu(frames, model, tmp_path, capsys):
    data = fits.getdata(frames / "refs" / "ref_1.fits")
    fits.HDUList(
        [fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI"), fits.ImageHDU(data, name="SCI2")]
    ).writeto(tmp_path / "mef.fits")
    (tmp_path / "broken.fits").write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    status = aeqa(
        "-q",
        "mask",
        tmp_path / "broken.fits",
        tmp_path / "mef.fits",
        "--hdu",
        "SCI",
        "--model",
        model,
        "--output-dir",
        out,
        *_FPR,
    )
    assert status == 1
    assert "broken.fits" in capsys.readouterr().err
    table = Table.read(out / "scores.ecsv", format="ascii.ecsv")
    assert list(table["status"]) == ["failed", "ok"]
    assert not (out / "broken_aeqa.fits").exists()
    ccd = CCDData.read(out / "mef_aeqa.fits")
    np.testing.assert_array_equal(ccd.data, data)


def test_mask_into_the_input_directory(frames, model, tmp_path, capsys):
    night = tmp_path / "night"
    night.mkdir()
    shutil.copy(frames / "refs" / "ref_0.fits", night / "ref_0.fits")
    args = ["-q", "mask", night, "--model", model, "--output-dir", night, *_FPR]
    assert aeqa(*args) == 0
    assert aeqa(*args) == 0  # the output is not taken for an input
    table = Table.read(night / "scores.ecsv", format="ascii.ecsv")
    assert [os.path.basename(f) for f in table["file"]] == ["ref_0.fits"]
    assert list(table["status"]) == ["skipped"]
    assert sorted(p.name for p in night.glob("*.fits")) == ["ref_0.fits", "ref_0_aeqa.fits"]


def test_mask_same_stem_is_an_error(frames, model, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(frames / "refs" / "ref_0.fits", other / "ref_0.fits")
    status = aeqa(
        "-q",
        "mask",
        frames / "refs" / "ref_0.fits",
        other / "ref_0.fits",
        "--model",
        model,
        "--output-dir",
        tmp_path / "out",
    )
    assert status == 2
    _assert_one_line_error(capsys.readouterr().err, "mask")


# -- issue 17 ----------------------------------------------------------------


def test_verbosity_options_after_the_subcommand(model, capsys):
    assert aeqa("info", model, "-q") == 0
    assert aeqa("info", model, "-v") == 0
    with pytest.raises(SystemExit) as info:
        aeqa("-q", "info", model, "-v")
    assert info.value.code == 2


def test_main_restores_the_package_logger():
    import logging

    logger = logging.getLogger("astro_aeqa")
    before = (logger.propagate, list(logger.handlers), logger.level)
    assert aeqa("-q", "info") == 0
    assert (logger.propagate, list(logger.handlers), logger.level) == before


def test_type_and_key_errors_are_bugs_not_user_errors(model):
    for exc in (TypeError("bug"), KeyError("bug")):
        with mock.patch("astro_aeqa.cli._info.run", side_effect=exc):
            with pytest.raises(type(exc)):
                aeqa("info", model)


def test_info_into_a_closed_pipe_exits_quietly():
    import subprocess
    import sys

    script = f"{sys.executable} -m astro_aeqa.cli info default | true; echo rc=${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert "rc=0" in done.stdout
    assert "Broken pipe" not in done.stderr and "Exception ignored" not in done.stderr


def test_hdu_name_and_extver(frames, model, tmp_path, capsys):
    from astro_aeqa.cli._inputs import parse_hdu

    assert parse_hdu("SCI,2") == ("SCI", 2) and parse_hdu(" 3 ") == 3 and parse_hdu("SCI") == "SCI"
    with pytest.raises(ValueError, match="EXTNAME,EXTVER"):
        parse_hdu("SCI,two")
    data = fits.getdata(frames / "refs" / "ref_1.fits")
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(data * 0, name="SCI", ver=1),
            fits.ImageHDU(data, name="SCI", ver=2),
        ]
    ).writeto(tmp_path / "amps.fits")
    out = tmp_path / "out"
    args = ("-q", "mask", tmp_path / "amps.fits", "--model", model, "--output-dir", out, *_FPR)
    assert aeqa(*args, "--hdu", "SCI,2") == 0
    np.testing.assert_array_equal(CCDData.read(out / "amps_aeqa.fits").data, data)


def test_directory_input_takes_compressed_fits_and_names_outputs(frames, model, tmp_path):
    import bz2
    import gzip

    night = tmp_path / "night"
    night.mkdir()
    raw = (frames / "refs" / "ref_0.fits").read_bytes()
    (night / "a.fits.bz2").write_bytes(bz2.compress(raw))
    (night / "b.fits.gz").write_bytes(gzip.compress(raw))
    (night / "c.fit").write_bytes(raw)
    (night / "d.fts").write_bytes(raw)
    (night / "notes.txt").write_text("not a frame")
    assert [p.name for p in expand_inputs([str(night)])] == [
        "a.fits.bz2",
        "b.fits.gz",
        "c.fit",
        "d.fts",
    ]
    out = tmp_path / "out"
    assert aeqa("-q", "mask", night, "--model", model, "--output-dir", out, *_FPR) == 0
    assert sorted(p.name for p in out.glob("*_aeqa.fits")) == [
        "a_aeqa.fits",
        "b_aeqa.fits",
        "c_aeqa.fits",
        "d_aeqa.fits",
    ]


def test_mask_rerun_keeps_the_rows_of_other_files(frames, model, tmp_path):
    """Issue 17: a rerun on one file rewrote scores.ecsv with one row."""
    out = tmp_path / "out"
    refs = sorted((frames / "refs").glob("*.fits"))
    assert aeqa("-q", "mask", *refs, "--model", model, "--output-dir", out, *_FPR) == 0
    first = Table.read(out / "scores.ecsv")
    assert len(first) == 3
    (out / "ref_1_aeqa.fits").unlink()
    assert aeqa("-q", "mask", refs[1], "--model", model, "--output-dir", out, *_FPR) == 0
    table = Table.read(out / "scores.ecsv")
    assert [os.path.basename(f) for f in table["file"]] == [r.name for r in refs]
    assert list(table["status"]) == ["ok", "ok", "ok"]
    np.testing.assert_allclose(table["score"], first["score"], rtol=1e-6)
    assert (
        aeqa("-q", "mask", refs[0], "--model", model, "--output-dir", out, "--overwrite", *_FPR)
        == 0
    )
    assert len(Table.read(out / "scores.ecsv")) == 1  # --overwrite: a new table
    (out / "scores.ecsv").write_text("not a table")
    assert aeqa("-q", "mask", refs[0], "--model", model, "--output-dir", out, *_FPR) == 2
    assert (out / "scores.ecsv").read_text() == "not a table"


def test_mask_refuses_an_output_that_is_the_input(frames, model, tmp_path, capsys):
    night = tmp_path / "night"
    night.mkdir()
    frame = night / "x.fits"
    shutil.copy(frames / "refs" / "ref_0.fits", frame)
    before = frame.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / "x_aeqa.fits").symlink_to(frame)
    args = ("mask", frame, "--model", model, "--output-dir", out, "--overwrite", *_FPR)
    assert aeqa("-q", *args) == 2
    assert "would replace the input file" in capsys.readouterr().err
    assert frame.read_bytes() == before


def test_output_dir_that_is_a_file_is_a_clear_error(frames, model, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    with mock.patch("astro_aeqa.cli._inputs.load_evaluator") as load:
        status = aeqa("-q", "score", frames / "cloud.fits", "--output-dir", tmp_path / "taken")
    assert status == 2 and not load.called  # found before the model is loaded
    err = capsys.readouterr().err
    assert "taken: exists and is a file" in err and "Errno" not in err
    status = aeqa("-q", "train", frames / "refs", "--output", tmp_path / "taken" / "m.safetensors")
    assert status == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_messages_name_only_existing_subcommands():
    import pathlib
    import re

    import astro_aeqa

    names = set(cli._SUBCOMMANDS)
    root = pathlib.Path(astro_aeqa.__file__).parent
    for path in root.rglob("*.py"):
        for command in re.findall(r"`aeqa ([a-z]+)", path.read_text()):
            assert command in names, f"{path.name} names `aeqa {command}`"


@pytest.mark.filterwarnings("always::astro_aeqa.exceptions.AEQAWarning")
def test_warnings_inside_a_subcommand_reach_stderr(capsys):
    import logging
    import warnings

    from astro_aeqa.exceptions import AEQAWarning

    def warn(args):
        warnings.warn("catalogue without proper motions", AEQAWarning)
        return 0

    py_warnings = logging.getLogger("py.warnings")
    before = (list(py_warnings.handlers), py_warnings.propagate)
    with mock.patch("astro_aeqa.cli._info.run", side_effect=warn):
        assert aeqa("info", "default") == 0
    assert "catalogue without proper motions" in capsys.readouterr().err
    assert (list(py_warnings.handlers), py_warnings.propagate) == before
