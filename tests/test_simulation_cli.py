# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``aeqa simulate`` writes frames with truth and refuses to overwrite."""

import numpy as np
from astropy.io import fits

from astro_aeqa.cli import main
from astro_aeqa.simulation import SimulatedImage


def test_simulate_writes_files(tmp_path, capsys):
    status = main(
        [
            "-q",
            "simulate",
            "--output-dir",
            str(tmp_path),
            "--shape",
            "64",
            "64",
            "--background",
            "cloud",
            "trail",
            "--level",
            "0.7",
            "--seed",
            "3",
        ]
    )
    assert status == 0
    paths = capsys.readouterr().out.split()
    assert len(paths) == 1
    with fits.open(paths[0]) as hdul:
        names = [h.name for h in hdul]
        assert {"TRUTH", "CATALOG", "TRUTH_CLOUD", "TRUTH_TRAIL"} <= set(names)
        assert hdul[0].header["BKGNAMES"] == "cloud,trail"
    sim = SimulatedImage.read(paths[0])
    assert sim.truth.max() > 0


def test_simulate_default_set_and_no_overwrite(tmp_path, capsys):
    args = ["-q", "simulate", "--output-dir", str(tmp_path), "--shape", "64", "64"]
    assert main(args) == 0
    paths = capsys.readouterr().out.split()
    assert [p.split("_")[-2] for p in paths] == ["clean", "cloud", "moon", "shutter"]
    before = fits.getdata(paths[0])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "file exists" in err and "--overwrite" in err
    assert np.array_equal(fits.getdata(paths[0]), before)
    assert main(args + ["--overwrite"]) == 0


def test_simulate_sequence(tmp_path, capsys):
    status = main(
        [
            "-q",
            "simulate",
            "--output-dir",
            str(tmp_path),
            "--shape",
            "48",
            "48",
            "--n-frames",
            "2",
            "--instrument",
            "gwac",
        ]
    )
    assert status == 0
    paths = capsys.readouterr().out.split()
    assert len(paths) == 2
    dates = [fits.getheader(p)["DATE-OBS"] for p in paths]
    assert dates[0] < dates[1]
    assert fits.getheader(paths[0])["INSTRUME"] == "GWAC_LIKE"


def test_simulate_bad_level(tmp_path, capsys):
    status = main(
        [
            "simulate",
            "--output-dir",
            str(tmp_path),
            "--shape",
            "64",
            "64",
            "--background",
            "cloud",
            "--level",
            "3",
        ]
    )
    assert status == 2
    assert "level" in capsys.readouterr().err
