# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Validation on real frames: a POSS-I plate of M67 and a small DECam cutout (tests/data/validation)."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.table import QTable
from astropy.wcs import FITSFixedWarning

from astro_aeqa.exceptions import AEQAWarning, CatalogError
from astro_aeqa.validation import load_catalog, measure_frame
from astro_aeqa.validation._utils import as_ccd, frame_epoch

DATA = Path(__file__).resolve().parent / "data" / "validation"
PLATE = DATA / "M6707HH.fits.gz"
M67 = DATA / "M67_gaiadr2_AriaKoul.csv"
DECAM = DATA / "testcase8" / "c4d_171113_060340_ooi_r_ls9.N6.fits"
CHUNKS = sorted((DATA / "testcase8" / "gaia").glob("chunk-*.fits"))


@pytest.fixture(scope="module")
def plate():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return as_ccd(str(PLATE))


def _measure(ccd, **kw):
    # the DR2 extract has no proper motions, and the plate is from 1951: a warning
    with pytest.warns(AEQAWarning, match="no proper motions.*64 years"):
        return measure_frame(ccd, M67, fwhm=3.0, name="M6707HH.fits", **kw)


def test_plate_epoch_from_old_date_format(plate):
    """DATE-OBS = '29/11/51', the pre-2000 FITS form."""
    assert frame_epoch(plate).jyear == pytest.approx(1951.91, abs=0.01)


def test_plate_calibrates_with_defaults(plate):
    """A characteristic curve is chosen by cross-validation: robust scatter <= 0.15 mag."""
    t = _measure(plate)
    m = t.meta
    assert m["positions"] == "catalog"
    assert m["curve"] not in ("offset", "linear")
    assert m["zp_scatter"] <= 0.15
    assert m["cv_scatter"]["offset"] > 1.0 > 0.2 > m["cv_scatter"][m["curve"]]
    assert m["n_zp"] > 300
    # the instrumental errors are scaled by the slope of the curve (about 2 on a plate)
    ok = np.isfinite(t["mag_inst_err"].value) & (t["mag_inst_err"].value > 0)
    ratio = t["mag_cal_err"].value[ok] / t["mag_inst_err"].value[ok]
    assert np.median(ratio) > 1.3


def test_plate_blends_checked_against_the_whole_catalogue(plate):
    """With g_range, neighbours outside the range still blend (G <= G_star + 2.5 within reach)."""
    t = _measure(plate, g_range=(13, 18))
    assert t.meta["zp_scatter"] <= 0.15
    g_star = t["mag_cat"].value
    assert g_star.min() >= 13 and g_star.max() <= 18
    cat = load_catalog(M67)
    x, y = plate.wcs.celestial.world_to_pixel_values(cat["ra"].value, cat["dec"].value)
    g = cat["phot_g_mean_mag"].value
    reach = t.meta["aperture_radius_pix"] + 1.5 * 3.0
    need = np.zeros(len(t), bool)
    outside = np.zeros(len(t), bool)  # blended only by stars outside g_range
    for k, row in enumerate(t):
        d = np.hypot(x - row["x"], y - row["y"])
        near = (d <= reach) & (np.arange(len(cat)) != row["catalog_index"])
        near &= g <= g_star[k] + 2.5
        need[k] = near.any()
        outside[k] = near.any() and not (near & (g >= 13) & (g <= 18)).any()
    assert need.sum() > 100 and outside.sum() > 5
    np.testing.assert_array_equal(np.asarray(t["blended"]), need)
    assert t.meta["n_blended"] == need.sum()
    assert not np.any(t["zp_star"] & t["blended"])


def test_plate_refusal_names_the_options(plate):
    with pytest.raises(CatalogError) as info:
        _measure(plate, curve="offset")
    msg = str(info.value)
    assert "zero-point scatter" in msg and "curve 'offset'" in msg
    for option in ("--curve", "--g-range", "--color-term", "--aperture", "--max-scatter"):
        assert option in msg


def test_small_decam_frame_calibrates_on_few_stars():
    """legacypipe testcase8: 8 Gaia stars, a handful usable; min_matches adapts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        ccd = as_ccd(str(DECAM), hdu=1)
    cat = load_catalog(CHUNKS)
    t = measure_frame(ccd, cat, fwhm=4.0, name=DECAM.name)
    assert 3 <= t.meta["min_matches"] < 10
    assert t.meta["n_zp"] >= 3 and t.meta["zp_scatter"] < 0.1
    assert t.meta["curve"] == "offset"  # too few stars for a curve
    # the lowest amplifier's saturation level (SATURATA, SATURATB) less the 10 % margin
    lowest = min(ccd.meta["SATURATA"], ccd.meta["SATURATB"])
    assert t.meta["saturation"] == pytest.approx(0.9 * lowest)
    with pytest.raises(CatalogError, match="min_matches=10"):
        measure_frame(ccd, cat, fwhm=4.0, min_matches=10)


def _cli(monkeypatch):
    from astro_aeqa import cli

    if "validate" not in cli._SUBCOMMANDS:
        monkeypatch.setattr(cli, "_SUBCOMMANDS", cli._SUBCOMMANDS + ["validate"])
    return cli


def test_cli_validates_the_plate_with_defaults(tmp_path, monkeypatch, capsys):
    cli = _cli(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AEQAWarning)
        status = cli.main(
            ["-q", "validate", str(PLATE), "--catalog", str(M67), "--output-dir", str(tmp_path)]
        )
    assert status == 0
    t = QTable.read(tmp_path / "M6707HH_stars.ecsv")
    assert t.meta["zp_scatter"] <= 0.15 and t.meta["curve"] not in ("offset", "linear")
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AEQAWarning)
        status = cli.main(
            [
                "-q",
                "validate",
                str(PLATE),
                "--catalog",
                str(M67),
                "--output-dir",
                str(tmp_path / "offset"),
                "--curve",
                "offset",
            ]
        )
    assert status == 2
    assert "--curve" in capsys.readouterr().err


def test_cli_options_reach_measure_frame(tmp_path, monkeypatch):
    """--aperture, --annulus, --match-radius, --color-term, --positions and several catalogues."""
    cli = _cli(monkeypatch)
    status = cli.main(
        [
            "-q",
            "validate",
            str(DECAM),
            "--hdu",
            "1",
            "--catalog",
            *map(str, CHUNKS),
            "--output-dir",
            str(tmp_path),
            "--fwhm",
            "4",
            "--aperture",
            "5",
            "--annulus",
            "14",
            "22",
            "--positions",
            "detect",
            "--match-radius",
            "0.8",
            "--color-term",
            "--snr-min",
            "10",
        ]
    )
    assert status == 0
    t = QTable.read(tmp_path / f"{DECAM.name.split('.')[0]}_stars.ecsv")
    assert t.meta["aperture_radius_pix"] == 5.0 and list(t.meta["annulus_pix"]) == [14.0, 22.0]
    assert t.meta["match_radius_arcsec"] == pytest.approx(0.8)
    assert t.meta["positions"] == "detect"
    assert np.all(t["separation"].to_value(u.arcsec) <= 0.8)
