# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_aeqa.validation: photometry, catalogues, cross-match, zero point, studies, CLI."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import QTable, Table

from astro_aeqa.exceptions import CatalogError, InputDataError
from astro_aeqa.validation import (
    aperture_photometry_table,
    background_rms_score_map,
    crossmatch,
    detect_stars,
    error_vs_score,
    fit_zero_point,
    light_curve_study,
    load_catalog,
    mask_ratio_study,
    masked_vs_unmasked,
    measure_frame,
    monotonic_rise,
    patch_scores_at,
    propagate_epoch,
    query_gaia,
    score_map_from_array,
)
from astro_aeqa.validation._synthetic import make_star_field

#: Small real files copied into the repository (see tests/data/validation/README.rst).
DATA = Path(__file__).resolve().parent / "data" / "validation"


@pytest.fixture(scope="module")
def field():
    return make_star_field((192, 192), n_stars=70, seed=3, zero_point=25.0)


@pytest.fixture(scope="module")
def cloudy():
    ccd, cat, truth = make_star_field((192, 192), n_stars=90, seed=4, cloud=0.8)
    ccd.mask = truth > 0.3
    return ccd, cat, truth


# --- photometry -------------------------------------------------------------------------------


def test_detect_stars_finds_most_stars(field):
    ccd, cat, _ = field
    stars = detect_stars(ccd, fwhm=3.0)
    m = crossmatch(
        QTable(
            {
                "ra": ccd.wcs.pixel_to_world_values(stars["x"], stars["y"])[0] * u.deg,
                "dec": ccd.wcs.pixel_to_world_values(stars["x"], stars["y"])[1] * u.deg,
            }
        ),
        cat,
        radius=1.5 * u.arcsec,
    )
    assert len(m) >= 0.6 * len(cat)
    assert np.all(np.diff(stars["peak"]) <= 0)


def test_detect_stars_none_found_is_clear():
    ccd = CCDData(np.random.default_rng(0).normal(100, 1, (64, 64)), unit="adu")
    with pytest.raises(InputDataError, match="no stars detected in flat.fits"):
        detect_stars(ccd, fwhm=3.0, threshold=50, name="flat.fits")


def test_aperture_photometry_recovers_flux_and_flags(field):
    ccd, cat, _ = field
    phot = aperture_photometry_table(ccd, cat, fwhm=3.0)
    bright = phot["snr"] > 50
    delta = phot["mag_inst"].value - (cat["phot_g_mean_mag"].value - 25.0)
    assert abs(np.nanmedian(delta[bright])) < 0.02
    assert phot["flux"].unit == u.adu
    # errors are honest: the scatter of bright stars is of the order of the quoted errors
    assert np.nanmedian(phot["mag_inst_err"][bright].value) < 0.03
    # edge flag near the border, saturation flag from an explicit level, masked from ccd.mask
    edge = aperture_photometry_table(ccd, [[1.0, 1.0], [96.0, 96.0]], fwhm=3.0)
    assert edge["edge"].tolist() == [True, False]
    sat = aperture_photometry_table(ccd, cat[:3], fwhm=3.0, saturation=0.0)
    assert sat["saturated"].all()
    masked = ccd.copy()
    masked.mask = np.zeros(ccd.shape, bool)
    masked.mask[int(cat["y"][0]), int(cat["x"][0])] = True
    flags = aperture_photometry_table(masked, cat[:2], fwhm=3.0)
    assert flags["masked"].tolist()[0] is True


def test_aperture_photometry_uses_uncertainty(field):
    from astropy.nddata import StdDevUncertainty

    ccd, cat, _ = field
    noisy = ccd.copy()
    noisy.uncertainty = StdDevUncertainty(np.full(ccd.shape, 100.0))
    a = aperture_photometry_table(ccd, cat[:5], fwhm=3.0)
    b = aperture_photometry_table(noisy, cat[:5], fwhm=3.0)
    assert np.all(b["flux_err"] > a["flux_err"])


def test_aperture_photometry_bad_positions(field):
    ccd, _, _ = field
    with pytest.raises(InputDataError, match="positions"):
        aperture_photometry_table(ccd, QTable({"ra": [1.0]}), fwhm=3.0)


# --- catalogues -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, ext",
    [("ascii.ecsv", ".ecsv"), ("ascii.csv", ".csv"), ("fits", ".fits"), ("votable", ".xml")],
)
def test_load_catalog_formats(tmp_path, field, fmt, ext):
    _, cat, _ = field
    path = tmp_path / f"cat{ext}"
    Table(cat).write(path, format=fmt)
    out = load_catalog(path, g_range=(None, 17.0))
    assert out["ra"].unit == u.deg and out["phot_g_mean_mag"].unit == u.mag
    assert len(out) == np.sum(cat["phot_g_mean_mag"].value <= 17.0)
    np.testing.assert_allclose(
        np.sort(out["ra"].value), np.sort(cat["ra"].value[cat["phot_g_mean_mag"].value <= 17])
    )


def test_load_catalog_missing_column_lists_them(tmp_path):
    path = tmp_path / "bad.csv"
    Table({"alpha": [1.0], "dec": [2.0], "vmag": [12.0]}).write(path, format="ascii.csv")
    with pytest.raises(
        CatalogError,
        match=r"bad.csv lacks the column\(s\) ra, phot_g_mean_mag.*needs ra, dec, phot_g_mean_mag",
    ):
        load_catalog(path)


def test_load_catalog_missing_file_says_how(tmp_path):
    with pytest.raises(CatalogError, match="does not exist.*'gaia'"):
        load_catalog(tmp_path / "nope.ecsv")


def test_load_catalog_ruwe_cut_and_real_dr2_csv():
    cat = load_catalog(
        QTable(
            {
                "ra": [1.0, 2.0, 3.0],
                "dec": [0.0] * 3,
                "phot_g_mean_mag": [12.0] * 3,
                "ruwe": [1.0, 2.0, np.nan],
            }
        ),
        ruwe_max=1.4,
    )
    assert len(cat) == 2
    m67 = load_catalog(DATA / "M67_gaiadr2_AriaKoul.csv")
    assert len(m67) == 1937 and "bp_rp" in m67.colnames


def test_propagate_epoch_uses_ref_epoch():
    cat = QTable(
        {
            "ra": [0.0] * u.deg,
            "dec": [60.0] * u.deg,
            "phot_g_mean_mag": [10.0] * u.mag,
            "pmra": [1000.0] * u.mas / u.yr,
            "pmdec": [-1000.0] * u.mas / u.yr,
            "ref_epoch": [2015.5],
        }
    )
    moved = propagate_epoch(cat, "2025-07-02T12:00:00")
    dt = 10.0
    assert moved["dec"][0].to_value(u.deg) == pytest.approx(60.0 - dt / 3600, abs=2e-6)
    assert moved["ra"][0].to_value(u.deg) == pytest.approx(dt / 3600 / 0.5, abs=4e-6)


def test_legacypipe_gaia_chunks_cross_match():
    """A real DECam cutout with its Gaia DR2 chunks: the WCS puts Gaia stars on detected stars."""
    from astropy.wcs import WCS, FITSFixedWarning

    base = DATA / "testcase8"
    image = base / "c4d_171113_060340_ooi_r_ls9.N6.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        with fits.open(image) as hdul:
            data = hdul[1].data.astype(float)
            wcs = WCS(hdul[1].header)
    chunks = sorted((base / "gaia").glob("chunk-*.fits"))
    cat = load_catalog(chunks)  # several files, stacked
    assert len(cat) == sum(len(load_catalog(p)) for p in chunks)
    x, y = wcs.world_to_pixel_values(cat["ra"].value, cat["dec"].value)
    ny, nx = data.shape
    on = (x > 5) & (x < nx - 6) & (y > 5) & (y < ny - 6)
    assert on.sum() >= 5
    ccd = CCDData(data, unit="adu", wcs=wcs)
    stars = detect_stars(ccd, fwhm=4.0, threshold=10)
    ra, dec = wcs.pixel_to_world_values(stars["x"], stars["y"])
    m = crossmatch(QTable({"ra": ra * u.deg, "dec": dec * u.deg}), cat[on], radius=1 * u.arcsec)
    assert len(m) >= 4
    assert np.median(m["separation"].to_value(u.arcsec)) < 0.3


# --- Gaia client (offline, fake client at our boundary) ---------------------------------------


def test_query_gaia_needs_wcs():
    ccd = CCDData(np.zeros((32, 32)), unit="adu")
    with pytest.raises(InputDataError, match="no celestial WCS"):
        query_gaia(ccd, client=object(), cache=False)


# --- cross-match and zero point ---------------------------------------------------------------


def test_crossmatch_rejects_ambiguous():
    src = QTable({"ra": [10.0, 20.0, 30.0] * u.deg, "dec": [0.0, 0.0, 0.0] * u.deg})
    cat = QTable({"ra": [10.0, 20.0, 20.0002, 31.0] * u.deg, "dec": [0.0, 0.0, 0.0, 0.0] * u.deg})
    m = crossmatch(src, cat, radius=1.0 * u.arcsec)
    assert m["source_index"].tolist() == [0]
    loose = crossmatch(src, cat, radius=1.0 * u.arcsec, reject_ambiguous=False)
    assert loose["source_index"].tolist() == [0, 1]
    with pytest.raises(TypeError, match="angle"):
        crossmatch(src, cat, radius=1.0)


def test_fit_zero_point_color_and_slope():
    rng = np.random.default_rng(0)
    inst = rng.uniform(-12, -6, 200)
    color = rng.uniform(0, 2, 200)
    cat = inst + 25.0 + 0.1 * color + rng.normal(0, 0.01, 200)
    cat[:10] += 2.0  # outliers
    fit = fit_zero_point(inst, cat, color=color)
    assert fit.zero_point == pytest.approx(25.0, abs=0.01)
    assert fit.color_term == pytest.approx(0.1, abs=0.01)
    assert fit.n_used <= 190 and fit.scatter < 0.02
    slope = fit_zero_point(inst, 2 * inst + 30 + rng.normal(0, 0.01, 200), slope=True)
    assert slope.slope == pytest.approx(2.0, abs=0.01)
    with pytest.raises(CatalogError, match="only 1 stars"):
        fit_zero_point([1.0, np.nan], [2.0, 3.0])


def _robust_fit_by_hand(kind, m, y, col, w, ok, sigma, maxiters, min_stars):
    """The clipping loop written out: median and mad_std of the stars in use."""
    from astropy.stats import mad_std

    from astro_aeqa.validation.calibration import _fit_once

    used = ok.copy()
    for _ in range((maxiters if maxiters else 0) + 1):
        f, df, cterm = _fit_once(
            kind, m[used], y[used], col[used] if col is not None else None, w[used]
        )
        resid = y - f(m) - (cterm * np.nan_to_num(col) if col is not None else 0.0)
        centre, scale = np.median(resid[used]), mad_std(resid[used])
        new_used = ok & (np.abs(resid - centre) <= sigma * max(scale, 1e-6))
        if new_used.sum() < min_stars or np.array_equal(new_used, used):
            break
        used = new_used
    return f, df, cterm, used


@pytest.mark.parametrize(
    ("curve", "with_color"),
    [
        ("offset", False),
        ("offset", True),
        ("linear", True),
        ("poly2", False),
        ("spline", False),
        ("auto", True),
    ],
)
def test_fit_zero_point_clipping_equals_the_loop_by_hand(monkeypatch, curve, with_color):
    from astro_aeqa.validation import calibration

    rng = np.random.default_rng(8)
    inst = rng.uniform(-12, -5, 300)
    color = rng.uniform(0, 2, 300)
    cat = inst + 25.0 + 0.05 * (inst + 8) ** 2 + 0.1 * color + rng.standard_t(3, 300) * 0.03
    cat[:15] += rng.uniform(0.3, 2.0, 15)  # outliers
    cat[15] = np.nan
    kwargs = {"curve": curve, "color": color if with_color else None, "sigma": 2.5}
    fit = fit_zero_point(inst, cat, **kwargs)
    monkeypatch.setattr(calibration, "_robust_fit", _robust_fit_by_hand)
    by_hand = fit_zero_point(inst, cat, **kwargs)
    assert 200 < fit.n_used < 285
    np.testing.assert_array_equal(fit.used, by_hand.used)
    assert fit.curve == by_hand.curve and fit.cv_scatter == pytest.approx(
        by_hand.cv_scatter, rel=1e-12
    )
    for name in ("zero_point", "color_term", "scatter", "slope", "zero_point_err"):
        assert getattr(fit, name) == pytest.approx(getattr(by_hand, name), rel=1e-12, abs=1e-12)


# --- one frame ---------------------------------------------------------------------------------


def test_measure_frame_recovers_zero_point(field):
    ccd, cat, _ = field
    stars = measure_frame(ccd, cat, fwhm=3.0)
    assert stars.meta["zero_point"] == pytest.approx(25.0, abs=0.02)
    clean = stars["snr"] > 50
    assert np.median(np.abs(stars["error"][clean].value)) < 0.05
    for col in ("mag_inst", "mag_cal", "mag_cat", "error", "snr", "score", "masked", "flags"):
        assert col in stars.colnames
    assert stars["error"].unit == u.mag


def test_measure_frame_masked_stars_are_worse(cloudy):
    ccd, cat, truth = cloudy
    smap = score_map_from_array(truth, 32, wcs=ccd.wcs)
    stars = measure_frame(ccd, cat, score_map=smap, fwhm=3.0, positions="catalog")
    assert len(stars) == len(cat)
    err = np.abs(stars["error"].value)
    assert np.nanmedian(err[stars["masked"]]) > 3 * np.nanmedian(err[~stars["masked"]])
    assert stars.meta["mask_ratio"] == pytest.approx(np.mean(ccd.mask))
    np.testing.assert_allclose(stars["score"], patch_scores_at(smap, stars["x"], stars["y"]))
    assert np.all(stars["score"][stars["masked"] & (stars["x"] < 50)] > 0.3)


def test_measure_frame_fixed_zero_point_for_a_masked_frame(field):
    ccd, cat, _ = field
    masked = ccd.copy()
    masked.mask = np.ones(ccd.shape, bool)  # nothing left to fit a zero point on
    with pytest.raises(CatalogError, match="pass zero_point="):
        measure_frame(masked, cat, fwhm=3.0, positions="catalog")
    fitted = measure_frame(ccd, cat, fwhm=3.0, positions="catalog")
    fixed = measure_frame(
        masked, cat, fwhm=3.0, positions="catalog", zero_point=fitted.meta["zero_point"]
    )
    assert fixed.meta["zp_fixed"] and not fitted.meta["zp_fixed"]
    assert fixed["masked"].all() and not fixed["zp_star"].any()
    np.testing.assert_allclose(fixed["mag_cal"].value, fitted["mag_cal"].value)


def test_patch_scores_at_needs_patch_size():
    from astropy.nddata import NDData

    with pytest.raises(InputDataError, match="AEQAPSZ"):
        patch_scores_at(NDData(np.zeros((2, 2))), [1.0], [1.0])


def test_background_rms_proxy_flags_cloud(cloudy):
    ccd, _, truth = cloudy
    smap = background_rms_score_map(ccd, 32)
    assert smap.meta["AEQAPSZ"] == 32 and smap.wcs is not None
    cloud = score_map_from_array(truth, 32).data > 0.3
    assert np.median(smap.data[cloud]) > np.median(smap.data[~cloud])


def _loop_patches(arr, p, func):
    """The patch reduction as a plain double loop over (possibly partial) patches."""
    gy, gx = -(-arr.shape[0] // p), -(-arr.shape[1] // p)
    out = np.full((gy, gx), np.nan)
    for j in range(gy):
        for i in range(gx):
            out[j, i] = func(arr[j * p : (j + 1) * p, i * p : (i + 1) * p])
    return out


@pytest.mark.parametrize(("shape", "p"), [((70, 45), 32), ((64, 96), 32), ((20, 30), 8)])
def test_patch_maps_equal_a_loop_over_patches(shape, p):
    from astropy.stats import sigma_clipped_stats

    rng = np.random.default_rng(4)
    data = rng.normal(100.0, 5.0, shape)
    data[rng.random(shape) < 0.01] = 1e4  # hot pixels are clipped
    data[:p, :p] = np.nan  # an empty patch
    data[-3:, -3:] = np.nan  # a partial corner patch with fewer than 10 pixels
    for func in (np.nanmean, np.nanmax):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = _loop_patches(data, p, func)
        np.testing.assert_allclose(
            score_map_from_array(data, p, func=func).data, expected.astype(np.float32), rtol=1e-7
        )

    def rms(block):
        good = np.isfinite(block)
        return (
            sigma_clipped_stats(block[good], sigma=3.0, maxiters=5)[2]
            if good.sum() >= 10
            else np.nan
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _loop_patches(data, p, rms)
    expected = (expected / np.nanmedian(expected)).astype(np.float32)
    got = background_rms_score_map(CCDData(data, unit="adu"), p).data
    assert np.isnan(got[0, 0]) and np.isfinite(got).sum() >= 2
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_measure_frame_bad_inputs(field):
    ccd, cat, _ = field
    with pytest.raises(InputDataError, match="no celestial WCS"):
        measure_frame(CCDData(ccd.data, unit="adu"), cat, fwhm=3.0, name="raw.fits")
    far = cat.copy()
    far["ra"] = far["ra"] + 10 * u.deg
    with pytest.raises(CatalogError, match="no catalogue star falls on"):
        measure_frame(ccd, far, fwhm=3.0)
    shifted = cat.copy()
    shifted["ra"] = shifted["ra"] + 20 * u.arcsec  # a WCS off by 20": nothing matches
    with pytest.raises(CatalogError, match="only 0 unmasked, unflagged catalogue stars.*matched"):
        measure_frame(ccd, shifted, fwhm=3.0, positions="detect")
    # forced photometry at the wrong places measures sky: too few stars with S/N >= 20
    with pytest.raises(CatalogError, match="unflagged catalogue stars.*catalogue positions"):
        measure_frame(ccd, shifted, fwhm=3.0)
    scrambled = cat.copy()
    scrambled["phot_g_mean_mag"] = np.random.default_rng(0).permutation(cat["phot_g_mean_mag"])
    with pytest.raises(CatalogError, match="zero-point scatter"):
        measure_frame(ccd, scrambled, fwhm=3.0)
    with pytest.raises(CatalogError, match="lacks the column"):
        measure_frame(ccd, QTable({"ra": [1.0], "dec": [1.0]}), fwhm=3.0)


# --- studies ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sequence():
    tables = []
    for i in range(6):
        ccd, cat, truth = make_star_field(
            (160, 160), n_stars=60, seed=10 + i, cloud=0.15 * i, cloud_box=(0, 160, 0, 30 + 10 * i)
        )
        # different fields; the cloud grows from frame to frame (mask ratio 0 to 0.45)
        ccd.mask = truth > 0.05
        tables.append(
            measure_frame(
                ccd,
                cat,
                fwhm=3.0,
                positions="catalog",
                score_map=score_map_from_array(truth, 32),
                name=f"f{i}",
            )
        )
    return tables


def test_studies_return_tables_and_figures(sequence):
    from matplotlib.figure import Figure

    t, fig = error_vs_score(sequence, n_bins=4)
    assert isinstance(fig, Figure) and len(t) >= 2
    assert t["median_abs_error"][-1] > t["median_abs_error"][0]
    t, fig = masked_vs_unmasked(sequence)
    assert len(t) == 6 and t.meta["ratio"] > 3
    t, fig = mask_ratio_study(sequence)
    assert t["n_frames"].sum() == 6
    t, fig = light_curve_study(sequence, min_frames=3)
    assert "improvement" in t.colnames and isinstance(fig, Figure)
    with pytest.raises(ValueError, match="no finite 'score'"):
        error_vs_score(
            [
                QTable(
                    {
                        "score": [np.nan] * 3,
                        "error": [0.1] * 3 * u.mag,
                        "snr": [99.0] * 3,
                        "saturated": [False] * 3,
                        "masked": [False] * 3,
                    }
                )
            ]
        )


def test_light_curve_improvement_on_fixed_stars():
    tables = []
    for i in range(8):
        ccd, cat_i, truth = make_star_field(
            (128, 128), n_stars=40, seed=7, cloud=0.6 if i % 2 else 0.0
        )
        ccd.data = ccd.data + np.random.default_rng(i).normal(0, 1, ccd.shape).astype(np.float32)
        ccd.mask = truth > 0.3
        tables.append(
            measure_frame(ccd, cat_i, fwhm=3.0, positions="catalog", min_matches=5, name=str(i))
        )
    t, _ = light_curve_study(tables)
    assert t.meta["n_stars_masked"] > 0
    assert t.meta["mean_improvement"] > 0.3  # clouds dim by 0.6 mag where masked


def test_monotonic_rise_passes_noisy_flat_then_rising_curves():
    # contamination only adds error: flat at the noise floor, then rising
    truth = np.array([0.01, 0.01, 0.01, 0.01, 0.012, 0.02, 0.05, 0.15])
    errors = np.full(truth.size, 0.002)
    rng = np.random.default_rng(1)
    results = [monotonic_rise(truth + rng.normal(0, errors), errors) for _ in range(400)]
    # the test of a fall is conservative: a true non-decreasing curve fails it less than alpha
    assert np.mean([not r["never_falls"] for r in results]) <= 0.05
    assert all(r["rises"] for r in results)
    r = results[0]
    assert r["dof"] == 8 and len(r["isotonic"]) == 8
    assert np.all(np.diff(r["isotonic"]) >= -1e-12)


def test_monotonic_rise_fails_on_a_fall_or_no_rise():
    errors = np.full(6, 0.002)
    dip = monotonic_rise([0.01, 0.02, 0.03, 0.015, 0.04, 0.1], errors)  # a 7-sigma fall
    assert not dip["never_falls"] and not dip["monotonic"] and dip["rises"]
    flat = monotonic_rise([0.010, 0.011, 0.009, 0.010, 0.011, 0.010], errors)
    assert flat["never_falls"] and not flat["rises"] and not flat["monotonic"]
    falling = monotonic_rise([0.1, 0.08, 0.05, 0.03, 0.02, 0.01], errors)
    assert not falling["never_falls"] and not falling["rises"]
    assert falling["spearman_rho"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="errors finite and > 0"):
        monotonic_rise([0.01, 0.02], [0.001, 0.0])
    with pytest.raises(ValueError, match="length >= 2"):
        monotonic_rise([0.01, 0.02, 0.03], [0.001, 0.001])


def test_error_vs_score_monotonic_verdict_can_fail(sequence):
    t, _ = error_vs_score(sequence, n_bins=4, snr_of="point")
    # the verdict is that of monotonic_rise on the binned medians and their errors
    again = monotonic_rise(t["median_abs_error"].value, t["median_abs_error_err"].value)
    assert t.meta["monotonic_test"]["p_never_falls"] == pytest.approx(again["p_never_falls"])
    assert t.meta["monotonic"] == again["monotonic"]
    assert np.all(t["median_abs_error_err"].value > 0) and np.all(t["mean_abs_error_err"].value > 0)
    assert t.meta["monotonic"]  # the cloud is where the score is high
    assert np.all(t["median_abs_error_over_sigma"] > 0)
    # the same stars with the score turned upside down: the error falls with the score
    flipped = []
    for tab in sequence:
        tab = tab.copy()
        tab["score"] = 1.0 - tab["score"]
        flipped.append(tab)
    t, _ = error_vs_score(flipped, n_bins=4, snr_of="point")
    assert not t.meta["monotonic"] and not t.meta["monotonic_test"]["never_falls"]


def _lc_tables(n_frames=10, n_stars=4):
    """Fixed stars with S/N 50, dimmed by 1 mag (S/N 10) and masked in the odd frames."""
    rng = np.random.default_rng(0)
    tables = []
    for i in range(n_frames):
        cloudy = bool(i % 2)
        mag_cat = np.linspace(12.0, 13.0, n_stars)
        tables.append(
            QTable(
                {
                    "source_id": np.arange(n_stars),
                    "mag_cat": mag_cat * u.mag,
                    "mag_cal": (mag_cat + (1.0 if cloudy else 0.0) + rng.normal(0, 0.01, n_stars))
                    * u.mag,
                    "error": np.full(n_stars, 1.0 if cloudy else 0.01) * u.mag,
                    "mag_inst_err": np.full(n_stars, 0.1 if cloudy else 0.02) * u.mag,
                    "snr": np.full(n_stars, 10.0 if cloudy else 50.0),
                    "score": np.full(n_stars, 1.0 if cloudy else 0.1),
                    "masked": np.full(n_stars, cloudy),
                    "saturated": np.zeros(n_stars, bool),
                }
            )
        )
    return tables


def test_star_snr_cut_keeps_the_points_clouds_dim():
    tables = _lc_tables()
    star, _ = light_curve_study(tables, snr_min=20, min_frames=5)
    assert star.meta["n_stars_masked"] == 4
    assert star.meta["mean_improvement"] == pytest.approx(1.0, abs=0.05)
    # a cut per point drops every dimmed point, and with them the improvement
    point, _ = light_curve_study(tables, snr_min=20, min_frames=5, snr_of="point")
    assert point.meta["n_stars_masked"] == 0
    m_star, _ = masked_vs_unmasked(tables, snr_min=20)
    assert m_star.meta["ratio"] == pytest.approx(100.0)
    m_point, _ = masked_vs_unmasked(tables, snr_min=20, snr_of="point")
    assert np.isnan(m_point.meta["median_abs_error_masked"])
    with pytest.raises(ValueError, match="snr_of must be"):
        error_vs_score(tables, snr_of="frame")


# --- command line --------------------------------------------------------------------------------


def test_cli_validate_writes_tables_and_figures(tmp_path, field, monkeypatch, capsys):
    from astro_aeqa import cli

    if "validate" not in cli._SUBCOMMANDS:
        monkeypatch.setattr(cli, "_SUBCOMMANDS", cli._SUBCOMMANDS + ["validate"])
    ccd, cat, truth = make_star_field((160, 160), n_stars=60, seed=5, cloud=0.7)
    ccd.mask = truth > 0.3
    path = tmp_path / "frame.fits"
    ccd.write(path)
    catpath = tmp_path / "cat.ecsv"
    Table(cat).write(catpath)
    out = tmp_path / "out"
    status = cli.main(
        [
            "-q",
            "validate",
            str(path),
            "--catalog",
            str(catpath),
            "--output-dir",
            str(out),
            "--fwhm",
            "3",
            "--patch-size",
            "32",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out.split()
    assert str(out / "frame_stars.ecsv") in printed
    assert (out / "validation_error_vs_score.png").stat().st_size > 1000
    stars = QTable.read(out / "frame_stars.ecsv")
    assert stars["masked"].any()
    # rerun without --overwrite: a clear error, status 2
    status = cli.main(
        [
            "-q",
            "validate",
            str(path),
            "--catalog",
            str(catpath),
            "--output-dir",
            str(out),
            "--fwhm",
            "3",
        ]
    )
    assert status == 2
    assert "--overwrite" in capsys.readouterr().err
    status = cli.main(["-q", "validate", str(path), "--catalog", str(tmp_path / "none.csv")])
    assert status == 2


def test_cli_validate_reads_aeqa_score_extension(tmp_path, monkeypatch, capsys):
    """An astro_aeqa output file: the mask and the AEQA_SCORE map travel to the star table."""
    io = pytest.importorskip("astro_aeqa.io")
    if not hasattr(io, "write_aeqa_fits"):
        pytest.skip("astro_aeqa.io.write_aeqa_fits not available")
    from astro_aeqa import cli

    if "validate" not in cli._SUBCOMMANDS:
        monkeypatch.setattr(cli, "_SUBCOMMANDS", cli._SUBCOMMANDS + ["validate"])
    ccd, cat, truth = make_star_field((160, 160), n_stars=60, seed=5, cloud=0.7)
    ccd.mask = truth > 0.3
    ccd.meta["AEQAPSZ"] = 32
    smap = score_map_from_array(truth, 32, wcs=ccd.wcs)
    path = tmp_path / "frame_aeqa.fits"
    io.write_aeqa_fits(path, ccd, score_map=smap, flags=np.zeros(ccd.shape, np.uint16))
    catpath = tmp_path / "cat.fits"
    Table(cat).write(catpath)
    out = tmp_path / "out"
    assert (
        cli.main(
            [
                "-q",
                "validate",
                str(path),
                "--catalog",
                str(catpath),
                "--output-dir",
                str(out),
                "--fwhm",
                "3",
            ]
        )
        == 0
    )
    stars = QTable.read(out / "frame_aeqa_stars.ecsv")
    np.testing.assert_allclose(
        stars["score"], patch_scores_at(smap, stars["x"], stars["y"]), atol=1e-6
    )
    assert stars["masked"].any() and not stars["masked"].all()
