# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The error model, saturation, NaN pixels, flux floor, characteristic curves and blends."""

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData
from astropy.table import QTable

from astro_aeqa.flags import AEQAFlags
from astro_aeqa.validation import (
    aperture_photometry_table,
    effective_gain,
    fit_zero_point,
    measure_frame,
    saturation_level,
    score_map_from_array,
)
from astro_aeqa.validation._synthetic import make_star_field


@pytest.fixture(scope="module")
def field():
    return make_star_field((192, 192), n_stars=70, seed=3, zero_point=25.0)


@pytest.mark.parametrize(
    "unit, meta, expected",
    [
        ("adu", {"GAIN": 2.5}, 2.5),
        ("adu", {"EGAIN": 1.7}, 1.7),
        ("adu", {"GAINA": 3.0, "GAINB": 4.0}, 3.5),
        ("adu", {}, 1.0),
        ("electron", {"GAIN": 4.0}, 1.0),
        ("electron / s", {"EXPTIME": 30.0, "GAIN": 4.0}, 30.0),
        ("adu / s", {"EXPTIME": 10.0, "GAIN": 2.0}, 20.0),
    ],
)
def test_effective_gain_keywords_and_units(unit, meta, expected):
    ccd = CCDData(np.ones((2, 2)), unit=unit, meta=meta)
    assert effective_gain(ccd) == pytest.approx(expected)


def test_effective_gain_quantity():
    ccd = CCDData(np.ones((2, 2)), unit="adu")
    assert effective_gain(ccd, gain=2.0 * u.electron / u.adu) == pytest.approx(2.0)


def test_gain_sets_the_poisson_term(field):
    ccd, cat, _ = field
    low, high = ccd.copy(), ccd.copy()
    low.meta = dict(ccd.meta, GAIN=0.1)
    high.meta = dict(ccd.meta, GAIN=100.0)
    a = aperture_photometry_table(low, cat, fwhm=3.0)
    b = aperture_photometry_table(high, cat, fwhm=3.0)
    bright = np.argmax(a["flux"].value)
    # a bright star's error is its Poisson noise: fewer electrons per adu, larger error
    assert a["flux_err"][bright] > 3 * b["flux_err"][bright]


def test_sky_variance_is_local(field):
    """A noisy half of the frame (as under a cloud) gives its stars larger errors."""
    ccd, cat, _ = field
    noisy = ccd.copy()
    data = np.array(ccd.data, float)
    rng = np.random.default_rng(0)
    data[:, :96] += rng.normal(0, 60.0, (192, 96))
    noisy.data = data.astype(np.float32)
    quiet = aperture_photometry_table(ccd, cat, fwhm=3.0)
    loud = aperture_photometry_table(noisy, cat, fwhm=3.0)
    left = np.asarray(cat["x"]) < 80
    right = np.asarray(cat["x"]) > 130
    growth = loud["flux_err"].value / quiet["flux_err"].value
    assert np.median(growth[left]) > 2.0
    assert np.median(growth[right]) < 1.3


def test_nan_pixel_in_aperture_is_flagged_and_excluded(field):
    ccd, cat, _ = field
    holed = ccd.copy()
    data = np.array(ccd.data, float)
    bright = int(np.argmin(cat["phot_g_mean_mag"].value))
    data[int(round(cat["y"][bright])), int(round(cat["x"][bright]))] = np.nan
    holed.data = data
    phot = aperture_photometry_table(holed, cat, fwhm=3.0)
    assert phot["nonfinite"][bright] and phot["nonfinite"].sum() == 1
    assert phot["flags"][bright] & int(AEQAFlags.NON_FINITE)
    stars = measure_frame(holed, cat, fwhm=3.0)
    row = np.flatnonzero(stars["catalog_index"] == bright)[0]
    assert stars["nonfinite"][row] and not stars["zp_star"][row]


def test_saturation_margin_and_plateau(field):
    ccd, cat, _ = field
    phot = aperture_photometry_table(ccd, cat, fwhm=3.0, saturation=1e9)
    peak = np.nanmax(phot["peak"].value)
    brightest = int(np.nanargmax(phot["peak"].value))
    keyed = ccd.copy()
    keyed.meta = dict(ccd.meta, SATURATE=peak / 0.95)
    assert saturation_level(keyed) == pytest.approx(0.9 * peak / 0.95)
    with_margin = aperture_photometry_table(keyed, cat, fwhm=3.0)
    assert with_margin["saturated"][brightest]  # 95 % of SATURATE: non-linear
    no_margin = aperture_photometry_table(keyed, cat, fwhm=3.0, saturation_margin=0.0)
    assert not no_margin["saturated"].any()
    # no keyword: a frame clipped at a plateau (its own maximum) flags the stars on it
    clipped = ccd.copy()
    clipped.meta = {k: v for k, v in ccd.meta.items() if k != "SATURATE"}
    level = 0.3 * peak
    clipped.data = np.minimum(np.asarray(ccd.data, float), level)
    flat = aperture_photometry_table(clipped, cat, fwhm=3.0)
    on_plateau = phot["peak"].value >= level
    assert on_plateau.sum() >= 2
    np.testing.assert_array_equal(flat["saturated"], on_plateau)


def test_flux_floor_keeps_dimmed_stars(field):
    """A star that a cloud dims to nothing keeps a finite magnitude: its 1-sigma flux."""
    ccd, cat, _ = field
    yy, xx = np.mgrid[20:172:4, 20:172:4]
    dist = np.min(np.hypot(xx.ravel()[:, None] - cat["x"], yy.ravel()[:, None] - cat["y"]), axis=1)
    assert dist.max() > 10
    empty = [[float(xx.ravel()[np.argmax(dist)]), float(yy.ravel()[np.argmax(dist)])]]  # no star
    phot = aperture_photometry_table(ccd, empty, fwhm=3.0)
    assert phot["flux_floored"][0] and np.isfinite(phot["mag_inst"][0].value)
    assert phot["mag_inst"][0].value == pytest.approx(-2.5 * np.log10(phot["flux_err"][0].value))
    off = aperture_photometry_table(ccd, empty, fwhm=3.0, flux_floor=False)
    assert not off["flux_floored"][0]
    # a thick cloud: forced photometry keeps every masked star, with a finite error
    thick, tcat, truth = make_star_field((160, 160), n_stars=60, seed=4, cloud=5.0)
    thick.mask = truth > 0.3
    stars = measure_frame(thick, tcat, fwhm=3.0, score_map=score_map_from_array(truth, 32))
    masked = np.asarray(stars["masked"])
    assert stars["flux_floored"][masked].sum() > 3
    assert np.all(np.isfinite(stars["error"].value[masked]))
    assert np.median(np.abs(stars["error"].value[masked])) > 1.0


def test_characteristic_curve_by_cross_validation():
    rng = np.random.default_rng(1)
    inst = rng.uniform(-12, -5, 400)
    ccd_like = inst + 25 + rng.normal(0, 0.02, 400)
    fit = fit_zero_point(inst, ccd_like, curve="auto")
    assert fit.curve == "offset" and set(fit.cv_scatter) >= {"offset", "poly3", "spline"}
    plate_like = 20 + 1.6 * inst + 0.08 * (inst + 8.5) ** 3 + rng.normal(0, 0.1, 400)
    plate_like[:20] += 3.0  # outliers
    fit = fit_zero_point(inst, plate_like, curve="auto")
    assert fit.curve in ("poly3", "spline")
    assert fit.scatter < 0.13 and fit.cv_scatter["linear"] > 2 * fit.scatter
    assert fit.n_used <= 385
    # continued linearly outside the fitted range; the slope is the derivative
    assert np.isfinite(fit.apply(np.array([-20.0, 5.0]))).all()
    d = fit.derivative(np.array([-10.0]))[0]
    step = (fit.apply(np.array([-10.0 + 1e-4])) - fit.apply(np.array([-10.0 - 1e-4])))[0] / 2e-4
    assert d == pytest.approx(step, rel=1e-3)
    few = fit_zero_point(inst[:12], plate_like[:12], curve="auto")
    assert few.curve == "offset"  # 12 stars are too few for a curve
    with pytest.raises(ValueError, match="curve must be"):
        fit_zero_point(inst, ccd_like, curve="cubic")


def test_errors_scaled_by_slope_and_zero_point_error(field):
    ccd, cat, _ = field
    stars = measure_frame(ccd, cat, fwhm=3.0)
    m = stars.meta
    assert m["zp_err"] == pytest.approx(m["zp_scatter"] / np.sqrt(m["n_zp"]))
    expected = np.hypot(stars["mag_inst_err"].value, m["zp_err"])
    np.testing.assert_allclose(stars["mag_cal_err"].value, expected, rtol=1e-6)
    # a detector with twice the magnitude scale: the calibrated errors double
    stretched = cat.copy()
    mean = np.mean(cat["phot_g_mean_mag"].value)
    stretched["phot_g_mean_mag"] = (2 * (cat["phot_g_mean_mag"].value - mean) + mean) * u.mag
    lin = measure_frame(ccd, stretched, fwhm=3.0, curve="linear")
    assert lin.meta["slope"] == pytest.approx(2.0, abs=0.05)
    ok = lin["snr"] > 50
    ratio = (
        np.sqrt(lin["mag_cal_err"].value ** 2 - lin.meta["zp_err"] ** 2) / lin["mag_inst_err"].value
    )
    assert np.median(ratio[ok]) == pytest.approx(2.0, abs=0.1)


def test_blend_check_uses_stars_outside_g_range():
    ccd, cat, _ = make_star_field((160, 160), n_stars=40, seed=8, mag_range=(14.0, 18.0))
    cat = QTable(cat)
    alone = measure_frame(ccd, cat, fwhm=3.0)
    inner = (alone["x"] > 30) & (alone["x"] < 130) & (alone["y"] > 30) & (alone["y"] < 130)
    target = int(alone["catalog_index"][np.flatnonzero(inner & ~alone["blended"])[0]])
    # a bright star (G = 12, outside g_range) 4 pixels from the target
    bright = cat[target : target + 1].copy()
    bright["source_id"] = [999]
    bright["ra"] = bright["ra"] + 4.0 / 3600 / np.cos(np.deg2rad(bright["dec"][0].value)) * u.deg
    bright["phot_g_mean_mag"] = [12.0] * u.mag
    from astropy.table import vstack

    full = vstack([cat, bright])
    stars = measure_frame(ccd, full, fwhm=3.0, g_range=(13, 19), max_scatter=1)
    assert 999 not in stars["source_id"]  # outside g_range: not measured ...
    row = np.flatnonzero(stars["catalog_index"] == target)[0]
    assert stars["blended"][row] and not stars["zp_star"][row]  # ... but it blends the target
    # cutting the catalogue to g_range first (the old behaviour) hides the neighbour
    blind = measure_frame(ccd, full[full["phot_g_mean_mag"].value >= 13], fwhm=3.0, max_scatter=1)
    row = np.flatnonzero(blind["catalog_index"] == target)[0]
    assert not blind["blended"][row]
