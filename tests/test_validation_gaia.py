# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Offline tests of the Gaia path and of local catalogues: a fake client at our boundary."""

import re
import time

import numpy as np
import pytest
from astropy import units as u
from astropy.table import QTable, Table

from astro_aeqa.exceptions import AEQAWarning, CatalogError
from astro_aeqa.validation import catalogs as catalogs_module
from astro_aeqa.validation import load_catalog, measure_frame, query_gaia, sky_tiles
from astro_aeqa.validation._synthetic import make_star_field

PM = (250.0, -400.0)  # mas/yr: 4.7 arcsec (pixels) in 10 years


class _FakeJob:
    def __init__(self, table):
        self._table = table

    def get_results(self):
        return self._table


class _FakeGaia:
    """Answers our ADQL from a table: it evaluates the tile and magnitude conditions."""

    ROW_LIMIT = 50  # a user's setting, which query_gaia must leave alone

    def __init__(self, table, *, fail=False, delay=0.0):
        self.table, self.fail, self.delay, self.queries = table, fail, delay, []

    def launch_job_async(self, query):
        self.queries.append(query)
        if self.fail:
            raise ConnectionError("Name or service not known")
        if self.delay:
            time.sleep(self.delay)
        t = self.table
        keep = np.zeros(len(t), bool)
        sid = np.asarray(t["source_id"], np.int64)
        for lo, hi in re.findall(r"source_id BETWEEN (\d+) AND (\d+)", query):
            keep |= (sid >= int(lo)) & (sid <= int(hi))
        box = r"\(ra >= ([-\d.]+) AND ra < ([-\d.]+) AND dec >= ([-\d.]+) AND dec < ([-\d.]+)\)"
        for ra0, ra1, dec0, dec1 in re.findall(box, query):
            ra, dec = np.asarray(t["ra"], float), np.asarray(t["dec"], float)
            keep |= (
                (ra >= float(ra0)) & (ra < float(ra1)) & (dec >= float(dec0)) & (dec < float(dec1))
            )
        g_max = re.search(r"phot_g_mean_mag <= ([\d.]+)", query)
        if g_max:
            keep &= np.asarray(t["phot_g_mean_mag"], float) <= float(g_max.group(1))
        return _FakeJob(t[keep])


def _source_ids(ra, dec):
    """Gaia-like source_id: the level-12 nested HEALPix index times 2**35, plus a counter."""
    from astropy_healpix import HEALPix

    hp = HEALPix(nside=2**12, order="nested")
    cell = hp.lonlat_to_healpix(np.asarray(ra) * u.deg, np.asarray(dec) * u.deg)
    return cell.astype(np.int64) * 2**35 + np.arange(len(ra))


def _gaia_rows(cat, *, years=10.0):
    """Archive rows (epoch 2016.0) of stars that sit at ``cat``'s positions ``years`` later."""
    dec = np.asarray(cat["dec"].to_value(u.deg))
    ra = np.asarray(cat["ra"].to_value(u.deg))
    t = Table()
    t["source_id"] = _source_ids(ra, dec)
    t["ra"] = ra - PM[0] * years / 3.6e6 / np.cos(np.deg2rad(dec))
    t["dec"] = dec - PM[1] * years / 3.6e6
    t["pmra"] = np.full(len(t), PM[0])
    t["pmdec"] = np.full(len(t), PM[1])
    t["ref_epoch"] = np.full(len(t), 2016.0)
    t["phot_g_mean_mag"] = np.asarray(cat["phot_g_mean_mag"].to_value(u.mag))
    t["bp_rp"] = np.ones(len(t))
    t["ruwe"] = np.ones(len(t))
    t["phot_variable_flag"] = np.array(["NOT_AVAILABLE"] * len(t))
    return t


@pytest.fixture(scope="module")
def moved_field():
    """A frame observed in 2026 whose stars moved by 4.7 pixels since the Gaia epoch."""
    pytest.importorskip("astropy_healpix")
    ccd, cat, truth = make_star_field((192, 192), n_stars=70, seed=3, zero_point=25.0)
    ccd.meta["DATE-OBS"] = "2026-01-01T00:00:00"
    return ccd, cat, _gaia_rows(cat)


def test_query_gaia_propagates_proper_motions(tmp_path, moved_field):
    ccd, cat, rows = moved_field
    client = _FakeGaia(rows)
    out = query_gaia(ccd, client=client, cache_dir=tmp_path, g_range=(None, 18.0))
    assert len(client.queries) == 1
    q = client.queries[0]
    assert "gaiadr3.gaia_source" in q and "source_id BETWEEN" in q and "TOP" not in q.upper()
    assert "phot_variable_flag" in q and "ruwe" in q
    assert "phot_g_mean_mag <= 20.5000" in q  # the faint limit, 2.5 mag deeper for blends
    assert client.ROW_LIMIT == 50  # the user's client is left alone
    assert len(out) == np.sum(cat["phot_g_mean_mag"].value <= 20.5)
    # positions moved from 2016.0 to the frame's 2026.0 land on the stars
    by_id = {int(s): i for i, s in enumerate(rows["source_id"])}
    idx = [by_id[int(s)] for s in out["source_id"]]
    sep = np.hypot(
        (out["ra"].value - cat["ra"].value[idx]) * np.cos(np.deg2rad(cat["dec"].value[idx])),
        out["dec"].value - cat["dec"].value[idx],
    )
    assert np.max(sep) * 3600 < 0.01
    # forced photometry with the propagated catalogue recovers the zero point
    stars = measure_frame(ccd, out, fwhm=3.0)
    assert stars.meta["zero_point"] == pytest.approx(25.0, abs=0.02)
    # the rows at the Gaia epoch (from the cache): measure_frame propagates them itself ...
    raw = query_gaia(ccd, client=client, cache_dir=tmp_path, g_range=(None, 18.0), epoch=None)
    assert len(client.queries) == 1
    assert np.all(raw["ref_epoch"] == 2016.0)
    inside = measure_frame(ccd, raw, fwhm=3.0)
    np.testing.assert_allclose(inside["x"], stars["x"], atol=1e-3)
    # ... and without propagation the apertures miss the stars by 4.7 pixels
    still = measure_frame(ccd, raw, fwhm=3.0, epoch=None, max_scatter=10, min_matches=1)
    bright = inside["snr"] > 50
    ratio = still["flux"].value[bright] / inside["flux"].value[bright]
    assert np.median(ratio) < 0.7


def test_query_gaia_caches_by_sky_tile(tmp_path, moved_field):
    ccd, _, rows = moved_field
    client = _FakeGaia(rows)
    first = query_gaia(ccd, client=client, cache_dir=tmp_path)
    files = sorted(tmp_path.glob("gaia_*.ecsv"))
    assert len(files) >= 1 and len(client.queries) == 1
    # a dithered frame of the same field: its tiles are in the cache, no new query
    dithered = ccd.copy()
    dithered.wcs = ccd.wcs.deepcopy()
    dithered.wcs.wcs.crval = ccd.wcs.wcs.crval + np.array([10.0, -8.0]) / 3600
    again = query_gaia(dithered, client=client, cache_dir=tmp_path)
    assert len(client.queries) == 1 and len(again) == len(first)
    assert sorted(tmp_path.glob("gaia_*.ecsv")) == files
    tiles = sky_tiles(*catalogs_module.footprint(ccd.wcs, ccd.shape))
    assert tiles and all(t[0] == "hpx" for t in tiles)


def test_query_gaia_grid_tiles_without_healpix(tmp_path, moved_field, monkeypatch):
    ccd, cat, rows = moved_field
    monkeypatch.setattr(catalogs_module, "_healpix", lambda: None)
    client = _FakeGaia(rows)
    out = query_gaia(ccd, client=client, cache_dir=tmp_path)
    assert "ra >= " in client.queries[0] and "source_id BETWEEN" not in client.queries[0]
    assert len(out) == len(cat)
    query_gaia(ccd, client=client, cache_dir=tmp_path)
    assert len(client.queries) == 1  # the grid tiles are cached too


def test_query_gaia_timeout_and_unreachable(moved_field):
    ccd, _, rows = moved_field
    with pytest.raises(CatalogError, match="did not answer within 0.2 s.*--catalog"):
        query_gaia(ccd, client=_FakeGaia(rows, delay=2.0), cache=False, timeout=0.2)
    with pytest.raises(CatalogError, match="ConnectionError.*--catalog"):
        query_gaia(ccd, client=_FakeGaia(rows, fail=True), cache=False)


def test_variables_and_high_ruwe_are_not_reference_stars(moved_field):
    ccd, _, rows = moved_field
    rows = rows.copy()
    rows["phot_variable_flag"][:5] = "VARIABLE"
    rows["ruwe"][5:10] = 3.0
    cat = load_catalog(rows, epoch=2026.0)
    stars = measure_frame(ccd, cat, fwhm=3.0, epoch=None)
    measured = set(np.asarray(stars["source_id"]).tolist())
    assert not measured & set(np.asarray(rows["source_id"][:10]).tolist())
    loose = measure_frame(ccd, cat, fwhm=3.0, epoch=None, reject_variables=False, ruwe_max=None)
    assert set(np.asarray(rows["source_id"][:10]).tolist()) <= set(
        np.asarray(loose["source_id"]).tolist()
    )


def test_vizier_column_names_and_several_files(tmp_path):
    ccd, cat, _ = make_star_field((160, 160), n_stars=50, seed=6, zero_point=25.0)
    viz = Table()
    viz["Source"] = np.arange(len(cat), dtype=np.int64)
    viz["RA_ICRS"] = cat["ra"].value
    viz["DE_ICRS"] = cat["dec"].value
    viz["Gmag"] = cat["phot_g_mean_mag"].value
    viz["BP-RP"] = cat["bp_rp"].value
    viz["pmRA"] = np.zeros(len(cat))
    viz["pmDE"] = np.zeros(len(cat))
    viz["RUWE"] = np.ones(len(cat))
    viz["VarFlag"] = ["NOT_AVAILABLE"] * len(cat)
    half = len(viz) // 2
    paths = [tmp_path / "a.fits", tmp_path / "b.csv"]
    viz[: half + 3].write(paths[0])  # three rows in both files: kept once
    viz[half:].write(paths[1], format="ascii.csv")
    out = load_catalog(paths)
    assert len(out) == len(cat)
    for col in ("ra", "dec", "phot_g_mean_mag", "bp_rp", "pmra", "pmdec", "ruwe", "source_id"):
        assert col in out.colnames
    stars = measure_frame(ccd, paths, fwhm=3.0, color_term=True)
    assert stars.meta["zero_point"] == pytest.approx(25.0, abs=0.03)
    assert abs(stars.meta["color_term"]) < 0.05
    with pytest.raises(CatalogError, match="empty list"):
        load_catalog([])


def test_catalogue_without_proper_motions_warns_across_a_large_epoch_gap():
    ccd, cat, _ = make_star_field((128, 128), n_stars=30, seed=2)
    plain = QTable(cat)[["ra", "dec", "phot_g_mean_mag"]]
    ccd.meta["DATE-OBS"] = "1951-11-29"
    with pytest.warns(AEQAWarning, match="no proper motions.*64 years"):
        measure_frame(ccd, plain, fwhm=3.0)
    ccd.meta["DATE-OBS"] = "2019-01-01"  # 3 years: no warning (filterwarnings = error)
    measure_frame(ccd, plain, fwhm=3.0)
    with pytest.warns(AEQAWarning, match="no proper motions"):
        load_catalog(plain, epoch=1951.9)
