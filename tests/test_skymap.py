# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The sky quality map (`astro_aeqa.skymap`) and ``aeqa skymap``."""

import shutil
from unittest import mock

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData
from astropy.wcs import WCS

pytest.importorskip("reproject")

import astro_aeqa.cli as cli  # noqa: E402
from astro_aeqa._wcs import score_map_wcs  # noqa: E402
from astro_aeqa.exceptions import InputDataError  # noqa: E402
from astro_aeqa.io import write_aeqa_fits  # noqa: E402
from astro_aeqa.skymap import (  # noqa: E402
    plot_sky_quality_map,
    sky_quality_map,
    write_sky_quality_map,
)

SHAPE = (128, 128)
PATCH = 32
SCALE = 1.0 / 3600  # deg per image pixel


def _wcs(crval):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [64.5, 64.5]
    w.wcs.cdelt = [-SCALE, SCALE]
    w.wcs.crval = crval
    return w


# Pixel (x, y) of frame B is pixel (x + 64, y + 32) of frame A: they share 6 of 16 patches.
WCS_A = _wcs([150.0, 2.0])
WCS_B = _wcs([150.0 - 64 * SCALE / np.cos(np.radians(2.0)), 2.0 + 32 * SCALE])


def _scores_b():
    scores = np.ones((4, 4), np.float32)
    scores[1, 2] = 20.0  # bad, outside frame A
    scores[0, 0] = 9.0  # bad, where A and B overlap (A has 1 there)
    scores[1, 1] = np.nan  # no valid pixel, inside the overlap
    return scores


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    """Two frames written by astro_aeqa, with offset WCS."""
    root = tmp_path_factory.mktemp("masked")
    paths = []
    for name, wcs, scores in [
        ("a", WCS_A, np.ones((4, 4), np.float32)),
        ("b", WCS_B, _scores_b()),
    ]:
        ccd = CCDData(np.zeros(SHAPE, np.float32), unit="adu", wcs=wcs)
        score_map = NDData(scores, wcs=score_map_wcs(wcs, PATCH, SHAPE))
        path = root / f"{name}_aeqa.fits"
        write_aeqa_fits(path, ccd, score_map=score_map, flags=np.zeros(SHAPE, np.uint16))
        paths.append(path)
    return paths


def _at(skymap, wcs, x, y):
    """The map value at image pixel (x, y) of a frame, and whether it lies on the map."""
    coord = wcs.pixel_to_world(x, y)
    mx, my = (int(round(float(v))) for v in skymap.wcs.world_to_pixel(coord))
    inside = 0 <= mx < skymap.shape[1] and 0 <= my < skymap.shape[0]
    return (skymap.data[my, mx] if inside else np.nan), inside


def test_map_covers_both_frames_and_places_the_bad_patch(products):
    skymap = sky_quality_map(products)
    assert isinstance(skymap, CCDData) and skymap.wcs.has_celestial
    # one map pixel per patch (the finest input), 4+2 by 4+1 patches
    assert skymap.shape == (5, 6)
    assert skymap.wcs.proj_plane_pixel_scales()[0].to_value(u.deg) == pytest.approx(
        PATCH * SCALE, rel=1e-3
    )
    # every patch centre of both frames is on the map and has a score
    centres = np.arange(4) * PATCH + (PATCH - 1) / 2
    for wcs in (WCS_A, WCS_B):
        for y in centres:
            for x in centres:
                value, inside = _at(skymap, wcs, x, y)
                assert inside
    assert skymap.meta["AEQANFRM"] == 2 and skymap.meta["AEQAMAXC"] == 2
    # the union of two 4x4 grids offset by (2, 1) patches: 16 + 16 - 2 * 3 pixels covered
    assert np.sum(~skymap.mask) == 26
    assert np.all(np.isnan(skymap.data[skymap.mask]))
    # the worst map pixel is frame B's bad patch, at its sky position
    iy, ix = np.unravel_index(np.nanargmax(skymap.data), skymap.shape)
    assert skymap.data[iy, ix] == 20
    found = skymap.wcs.pixel_to_world(ix, iy)
    expected = WCS_B.pixel_to_world(2 * PATCH + (PATCH - 1) / 2, PATCH + (PATCH - 1) / 2)
    assert found.separation(expected) < 0.1 * PATCH * SCALE * u.deg
    # mean where they overlap, and a patch without a score leaves the other frame's
    value, _ = _at(skymap, WCS_B, (PATCH - 1) / 2, (PATCH - 1) / 2)
    assert value == pytest.approx(5.0)
    value, _ = _at(skymap, WCS_B, PATCH + (PATCH - 1) / 2, PATCH + (PATCH - 1) / 2)
    assert value == pytest.approx(1.0)


def test_max_and_resolution(products):
    worst = sky_quality_map(products, combine="max")
    value, _ = _at(worst, WCS_B, (PATCH - 1) / 2, (PATCH - 1) / 2)
    assert value == pytest.approx(9.0)
    fine = sky_quality_map(products, resolution=PATCH * u.arcsec / 2)
    assert fine.shape == (10, 12)
    assert np.sum(~fine.mask) == 4 * 26
    with pytest.raises(ValueError, match="combine"):
        sky_quality_map(products, combine="median")
    with pytest.raises(u.UnitsError, match="angle"):
        sky_quality_map(products, resolution=3 * u.s)


def test_results_in_memory(tiny_evaluator, reference_frames):
    result = tiny_evaluator.evaluate(reference_frames[0])
    skymap = sky_quality_map([result])
    assert skymap.shape == result.patch_scores.shape
    np.testing.assert_allclose(skymap.data, result.patch_scores, rtol=1e-6)


def test_bad_inputs(products, tmp_path):
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(plain)
    with pytest.raises(InputDataError, match="plain.fits.*AEQA_SCORE"):
        sky_quality_map([products[0], plain])
    with pytest.raises(InputDataError, match="no celestial WCS"):
        sky_quality_map([NDData(np.ones((4, 4)))])
    with pytest.raises(TypeError, match="input 0"):
        sky_quality_map([np.ones((4, 4))])
    with pytest.raises(ValueError, match="empty"):
        sky_quality_map([])


def test_write_and_plot(products, tmp_path):
    skymap = sky_quality_map(products)
    path = write_sky_quality_map(skymap, tmp_path / "sky.fits")
    back = CCDData.read(path)
    np.testing.assert_array_equal(back.mask, skymap.mask)
    np.testing.assert_allclose(back.data, skymap.data, equal_nan=True)
    assert back.wcs.has_celestial and back.header["AEQACOMB"] == "mean"
    with pytest.raises(FileExistsError, match="overwrite"):
        write_sky_quality_map(skymap, path)
    fig = plot_sky_quality_map(skymap, path=tmp_path / "sky.png")
    assert (tmp_path / "sky.png").read_bytes()[:4] == b"\x89PNG"
    assert fig.axes[0].coords[0].get_axislabel() == "Right ascension"


def test_cli_skymap(products, tmp_path, capsys):
    def aeqa(*argv):
        names = list(dict.fromkeys([*cli._SUBCOMMANDS, "skymap"]))
        with mock.patch.object(cli, "_SUBCOMMANDS", names):
            return cli.main([str(a) for a in argv])

    out, png = tmp_path / "night.fits", tmp_path / "night.png"
    folder = tmp_path / "masked"
    folder.mkdir()
    for path in products:
        shutil.copy(path, folder)
    assert aeqa("-q", "skymap", folder, "--output", out, "--png", png, "--combine", "max") == 0
    assert capsys.readouterr().out.split() == [str(out), str(png)]
    assert fits.getheader(out)["AEQACOMB"] == "max" and np.nanmax(fits.getdata(out)) == 20
    assert png.read_bytes()[:4] == b"\x89PNG"
    # the map is not replaced without --overwrite
    assert aeqa("-q", "skymap", folder, "--output", out) == 2
    assert "--overwrite" in capsys.readouterr().err
    # the map written into the input directory is not read as an input
    inside = folder / "sky.fits"
    assert aeqa("-q", "skymap", folder, "--output", inside) == 0
    assert aeqa("-q", "skymap", folder, "--output", inside, "--overwrite") == 0
    assert fits.getheader(inside)["AEQANFRM"] == 2
    # issue 17: an --output that is an input file named on the command line is refused
    first = folder / products[0].name
    before = first.read_bytes()
    assert aeqa("-q", "skymap", *folder.glob("*_aeqa.fits"), "--output", first, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "would replace the input file" in err and "files_or_results" not in err
    assert first.read_bytes() == before
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(inside, alone / "sky.fits")
    assert aeqa("-q", "skymap", alone, "--output", alone / "sky.fits", "--overwrite") == 2
    assert "the only input found is the --output map" in capsys.readouterr().err


def test_without_reproject(products):
    with mock.patch.dict("sys.modules", {"reproject": None, "reproject.mosaicking": None}):
        with pytest.raises(ImportError, match=r"pip install 'astro_aeqa\[parallel\]'"):
            sky_quality_map(products)
