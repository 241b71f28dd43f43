# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The simulator is right: PSF, photometry, noise, backgrounds, astrometry, files."""

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData
from astropy.table import Table
from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry
from photutils.psf import fit_fwhm

from astro_aeqa.simulation import (
    GWAC_LIKE,
    PAPER_2P5M,
    Instrument,
    SimulatedImage,
    make_psf_image,
    simulate_image,
    simulate_sequence,
)

SHAPE = (256, 256)


def grid_catalog(instrument, fwhm_arcsec, *, shape=SHAPE, spacing=42, peak_e=20000.0, seed=0):
    """A grid of isolated stars, each with a peak of about ``peak_e`` electrons."""
    from astro_aeqa.simulation.image import DEFAULT_POINTING, _make_wcs

    fwhm_pix = fwhm_arcsec / instrument.pixel_scale.to_value(u.arcsec / u.pix)
    flux = peak_e * 1.133 * fwhm_pix**2
    mag = instrument.zero_point.value - 2.5 * np.log10(
        flux / instrument.exposure_time.to_value(u.s)
    )
    rng = np.random.default_rng(seed)
    c = np.arange(spacing // 2 + 4, shape[0] - spacing // 2 - 4, spacing, dtype=float)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    x = xx.ravel() + rng.uniform(-0.5, 0.5, xx.size)
    y = yy.ravel() + rng.uniform(-0.5, 0.5, yy.size)
    wcs = _make_wcs(shape, instrument, DEFAULT_POINTING, 0 * u.deg)
    sky = wcs.pixel_to_world(x, y)
    return Table({"ra": sky.ra.deg, "dec": sky.dec.deg, "phot_g_mean_mag": np.full(x.size, mag)})


def sky_adu(sim):
    return sim.ccd.meta["SKYADU"]


@pytest.mark.parametrize("psf", ["gaussian", "moffat"])
@pytest.mark.parametrize("fwhm", [0.5, 1.0, 2.0])
def test_fwhm_recovered(psf, fwhm):
    cat = grid_catalog(PAPER_2P5M, fwhm)
    sim = simulate_image(SHAPE, fwhm=fwhm * u.arcsec, psf=psf, catalog=cat, seed=1)
    fwhm_pix = sim.ccd.meta["FWHMPIX"]
    data = sim.ccd.data - sky_adu(sim)
    xy = np.column_stack([sim.catalog["x"], sim.catalog["y"]])
    if psf == "gaussian":
        fit_shape = max(3, int(2 * (1.5 * fwhm_pix // 2) + 1))
        measured = np.median(fit_fwhm(data, xypos=xy, fit_shape=fit_shape))
        assert measured == pytest.approx(fwhm_pix, rel=0.05)
    else:
        # a Gaussian fit to a Moffat core: fit about one FWHM
        fit_shape = max(3, int(2 * (fwhm_pix // 2) + 1))
        measured = np.median(fit_fwhm(data, xypos=xy, fit_shape=fit_shape))
        # the Gaussian-fit bias on a beta=2.5 Moffat is +7 per cent at 2.2 pix (0.5")
        rel = 0.05 if fwhm >= 1.0 else 0.08
        assert measured == pytest.approx(fwhm_pix, rel=rel)
        # and a Moffat fit finds the requested FWHM exactly
        from astropy.modeling import fitting, models

        i = int(np.argmin(np.hypot(xy[:, 0] - SHAPE[1] / 2, xy[:, 1] - SHAPE[0] / 2)))
        x0, y0 = int(round(xy[i, 0])), int(round(xy[i, 1]))
        h = int(3 * fwhm_pix) + 2
        cut = data[y0 - h : y0 + h + 1, x0 - h : x0 + h + 1]
        yy, xx = np.mgrid[: cut.shape[0], : cut.shape[1]]
        model = models.Moffat2D(
            amplitude=cut.max(),
            x_0=xy[i, 0] - x0 + h,
            y_0=xy[i, 1] - y0 + h,
            gamma=fwhm_pix,
            alpha=2.5,
        )
        model.alpha.fixed = True
        fit = fitting.TRFLSQFitter()(model, xx, yy, cut)
        assert fit.fwhm == pytest.approx(fwhm_pix, rel=0.05 if fwhm > 0.5 else 0.08)


def test_make_psf_image_flux_and_position():
    img = make_psf_image((41, 41), 3.5, position=(20.3, 19.6), flux=1000.0)
    assert img.sum() == pytest.approx(1000.0, rel=1e-9)
    yy, xx = np.mgrid[:41, :41]
    assert (img * xx).sum() / img.sum() == pytest.approx(20.3, abs=0.01)
    assert (img * yy).sum() / img.sum() == pytest.approx(19.6, abs=0.01)


def _moments_ellipticity(img):
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    w = img / img.sum()
    mx, my = (w * xx).sum(), (w * yy).sum()
    qxx = (w * (xx - mx) ** 2).sum()
    qyy = (w * (yy - my) ** 2).sum()
    qxy = (w * (xx - mx) * (yy - my)).sum()
    return np.hypot(qxx - qyy, 2 * qxy) / (qxx + qyy)


def test_psf_defects_change_the_psf():
    clean = make_psf_image((61, 61), 3.0, psf="gaussian")
    assert _moments_ellipticity(clean) < 0.01
    elongated = make_psf_image(
        (61, 61), 3.0, psf="gaussian", psf_defect="elongated", defect_level=0.8
    )
    assert _moments_ellipticity(elongated) > 0.3
    double = make_psf_image((61, 61), 3.0, psf="gaussian", psf_defect="double", defect_level=0.8)
    assert _moments_ellipticity(double) > 0.3
    donut = make_psf_image((61, 61), 3.0, psf_defect="defocus", defect_level=0.8)
    assert donut[30, 30] < 0.7 * donut.max()  # a hole in the middle
    for img in (double, donut):
        assert img.sum() == pytest.approx(1.0, rel=1e-9)


def test_psf_defect_region_truth():
    sim = simulate_image(
        (128, 128),
        psf_defect="double",
        defect_level=0.7,
        defect_region=np.s_[:, 64:],
        n_stars=50,
        seed=3,
    )
    assert np.all(sim.truth[:, 64:] == 1)
    assert np.all(sim.truth[:, :64] == 0)
    assert sim.ccd.meta["PSFDEF"] == "double"


def test_aperture_photometry_recovers_magnitudes():
    fwhm = 1.0
    cat = grid_catalog(PAPER_2P5M, fwhm)
    sim = simulate_image(SHAPE, fwhm=fwhm * u.arcsec, catalog=cat, seed=2)
    fwhm_pix = sim.ccd.meta["FWHMPIX"]
    xy = np.column_stack([sim.catalog["x"], sim.catalog["y"]])
    phot = aperture_photometry(sim.ccd.data - sky_adu(sim), CircularAperture(xy, r=4 * fwhm_pix))
    gain = PAPER_2P5M.gain.to_value(u.electron / u.adu)
    rate = np.asarray(phot["aperture_sum"]) * gain / PAPER_2P5M.exposure_time.to_value(u.s)
    mag = PAPER_2P5M.zero_point.value - 2.5 * np.log10(rate)
    dmag = mag - np.asarray(sim.catalog["phot_g_mean_mag"])
    assert abs(np.median(dmag)) < 0.01
    assert np.all(np.abs(dmag) < 0.03)
    # the catalogue flux is the flux in the exposure, in electrons and adu
    assert np.allclose(
        sim.catalog["flux"].to_value(u.electron),
        PAPER_2P5M.electron_rate(sim.catalog["phot_g_mean_mag"]) * 60.0,
    )
    assert np.allclose(sim.catalog["flux_adu"].to_value(u.adu), sim.catalog["flux"].value / gain)


@pytest.mark.parametrize("instrument", [PAPER_2P5M, GWAC_LIKE])
def test_sky_level_and_noise(instrument):
    sim = simulate_image((128, 128), instrument=instrument, n_stars=0, n_galaxies=0, seed=4)
    t = instrument.exposure_time.to_value(u.s)
    gain = instrument.gain.to_value(u.electron / u.adu)
    sky_e = (
        10 ** (-0.4 * (instrument.sky_brightness.value - instrument.zero_point.value))
        * instrument.pixel_scale.to_value(u.arcsec / u.pix) ** 2
        * t
    )
    dark_e = instrument.dark_current.to_value(u.electron / u.s) * t
    rn = instrument.read_noise.to_value(u.electron)
    expected_level = (sky_e + dark_e) / gain + instrument.bias.to_value(u.adu)
    expected_std = np.sqrt(sky_e + dark_e + rn**2) / gain
    assert np.mean(sim.ccd.data) == pytest.approx(expected_level, rel=2e-3)
    assert np.std(sim.ccd.data) == pytest.approx(expected_std, rel=0.03)
    assert sim.ccd.data.dtype == np.float32
    assert sim.ccd.unit == u.adu
    assert np.all(sim.truth == 0)


def test_saturation_clips():
    inst = PAPER_2P5M.replace(saturation=3000 * u.adu)
    sim = simulate_image((128, 128), instrument=inst, mag_range=(12, 14), n_stars=20, seed=5)
    assert sim.ccd.data.max() == 3000
    assert np.sum(sim.ccd.data == 3000) > 5


def test_cloud_dims_flux_where_truth_says():
    fwhm = 1.0
    cat = grid_catalog(PAPER_2P5M, fwhm, peak_e=40000.0)
    sim = simulate_image(
        SHAPE, fwhm=fwhm * u.arcsec, catalog=cat, background="cloud", level=0.8, seed=6
    )
    fwhm_pix = sim.ccd.meta["FWHMPIX"]
    xy = np.column_stack([sim.catalog["x"], sim.catalog["y"]])
    ap = CircularAperture(xy, r=3 * fwhm_pix)
    ann = CircularAnnulus(xy, r_in=5 * fwhm_pix, r_out=7 * fwhm_pix)
    bkg = np.array([np.median(m.get_values(sim.ccd.data)) for m in ann.to_mask(method="center")])
    flux = np.asarray(aperture_photometry(sim.ccd.data, ap)["aperture_sum"]) - bkg * ap.area
    ratio = flux / sim.catalog["flux_adu"].value / 0.985  # enclosed fraction within 3 FWHM
    ext = sim.truth[np.rint(xy[:, 1]).astype(int), np.rint(xy[:, 0]).astype(int)]
    assert ext.max() - ext.min() > 0.2  # the test means something
    assert np.median(np.abs(ratio - (1 - ext))) < 0.03
    # a cloud at level 0.6-0.8 dims by tens of per cent and adds light of order the sky
    assert 0.1 < np.mean(ext) < 0.7
    assert np.mean(sim.ccd.data) > sim.ccd.meta["SKYADU"]
    assert np.all(sim.components["cloud"] == sim.truth)


def _block_medians(data, n=8):
    ny, nx = data.shape
    return np.median(data.reshape(n, ny // n, n, nx // n), axis=(1, 3))


def test_moon_and_shutter_truth_match_sky_change():
    inst = PAPER_2P5M
    gain = inst.gain.to_value(u.electron / u.adu)
    sky_e = inst.sky_electrons_per_pixel()
    dark_adu = (
        inst.dark_current.to_value(u.electron / u.s) * inst.exposure_time.to_value(u.s) / gain
    )
    bias = inst.bias.to_value(u.adu)
    moon = simulate_image((128, 128), n_stars=0, n_galaxies=0, background="moon", level=0.7, seed=7)
    extra = (_block_medians(moon.ccd.data) - moon.ccd.meta["SKYADU"]) / (sky_e / gain)
    truth = _block_medians(moon.truth)
    assert np.allclose(extra, 3.0 * truth, atol=0.05)
    assert truth.max() > 0.5
    shut = simulate_image(
        (128, 128), n_stars=0, n_galaxies=0, background="shutter", level=0.5, seed=8
    )
    exposure = (_block_medians(shut.ccd.data) - bias - dark_adu) / (sky_e / gain)
    assert np.allclose(exposure, 1 - _block_medians(shut.truth), atol=0.03)
    assert shut.truth.max() == pytest.approx(0.5)


def test_trail_and_spikes_truth():
    sim = simulate_image((128, 128), n_stars=0, n_galaxies=0, background="trail", level=0.5, seed=9)
    on = sim.truth == 1
    assert 0.01 < on.mean() < 0.3
    assert (
        np.median(sim.ccd.data[on])
        > np.median(sim.ccd.data[~on]) + 3 * np.std(sim.ccd.data[~on]) / 4
    )
    sim = simulate_image((256, 256), n_stars=50, background="spikes", level=1.0, seed=10)
    # spikes need bright stars: at least two saturated ones are made in the frame
    assert np.sum(sim.ccd.data >= PAPER_2P5M.saturation.value) > 4
    brightest = np.argmax(sim.catalog["flux"])
    x, y = (int(round(sim.catalog[c][brightest])) for c in ("x", "y"))
    assert sim.components["spikes"][y, x] > 0.5
    assert 0 < np.mean(sim.truth > 0) < 0.5


def test_truth_is_max_of_components():
    sim = simulate_image(
        (128, 128),
        n_stars=30,
        background=["cloud", "moon", "shutter"],
        level={"cloud": 0.3, "moon": 0.8, "shutter": 0.5},
        seed=11,
    )
    stack = np.max(np.stack(list(sim.components.values())), axis=0)
    assert np.array_equal(sim.truth, stack)
    assert sim.truth.dtype == np.float32
    assert 0 <= sim.truth.min() and sim.truth.max() <= 1
    assert sim.ccd.meta["BKGNAMES"] == "cloud,moon,shutter"


@pytest.mark.parametrize("rotation", [0, 33])
def test_wcs_matches_catalog(rotation):
    sim = simulate_image((128, 96), n_stars=40, rotation=rotation * u.deg, seed=12)
    x, y = sim.ccd.wcs.world_to_pixel_values(
        sim.catalog["ra"].to_value(u.deg), sim.catalog["dec"].to_value(u.deg)
    )
    assert np.allclose(x, sim.catalog["x"], atol=1e-6)
    assert np.allclose(y, sim.catalog["y"], atol=1e-6)
    assert np.all((sim.catalog["x"] > -0.5) & (sim.catalog["x"] < 95.5))
    scale = sim.ccd.wcs.proj_plane_pixel_scales()[0].to_value(u.arcsec)
    assert scale == pytest.approx(0.2267)


def test_catalog_replaces_stars_and_galaxies_exist():
    sim = simulate_image((128, 128), n_stars=100, n_galaxies=20, seed=13)
    assert set(sim.catalog["type"]) == {"star", "galaxy"}
    assert np.sum(sim.catalog["type"] == "galaxy") > 10
    assert sim.ccd.meta["NSTARS"] == np.sum(sim.catalog["type"] == "star")
    cat = Table({"ra": [150.1] * u.deg, "dec": [2.2] * u.deg, "gmag": [16.0]})
    sim = simulate_image((64, 64), catalog=cat, seed=1)
    assert len(sim.catalog) == 1
    assert sim.catalog["phot_g_mean_mag"][0] == 16.0


def test_magnitude_range_spans_saturated_to_noise():
    sim = simulate_image((512, 512), seed=14)
    from astro_aeqa.simulation._sources import default_mag_range

    m0, m1 = default_mag_range(PAPER_2P5M, sim.ccd.meta["FWHMPIX"])
    mags = sim.catalog["phot_g_mean_mag"]
    assert mags.min() >= m0 and mags.max() <= m1
    # more faint stars than bright ones (a rising luminosity function)
    assert np.sum(mags > (m0 + m1) / 2) > 3 * np.sum(mags < (m0 + m1) / 2)
    assert len(sim.catalog) == pytest.approx(1.2e-3 * 512**2 * 1.1, rel=0.15)


def test_deterministic_for_a_seed():
    a = simulate_image((64, 64), background="cloud", seed=5)
    b = simulate_image((64, 64), background="cloud", seed=5)
    c = simulate_image((64, 64), background="cloud", seed=6)
    assert np.array_equal(a.ccd.data, b.ccd.data)
    assert np.array_equal(a.truth, b.truth)
    assert not np.array_equal(a.ccd.data, c.ccd.data)


def test_fits_round_trip(tmp_path):
    sim = simulate_image((64, 64), background=["cloud", "trail"], level=0.5, n_galaxies=3, seed=15)
    path = sim.write(tmp_path / "sim.fits")
    back = SimulatedImage.read(path)
    assert np.array_equal(back.ccd.data, sim.ccd.data)
    assert np.array_equal(back.truth, sim.truth)
    assert set(back.components) == {"cloud", "trail"}
    assert list(back.catalog["type"]) == list(sim.catalog["type"])
    assert np.allclose(back.catalog["ra"].to_value(u.deg), sim.catalog["ra"].to_value(u.deg))
    assert back.catalog["flux"].unit == u.electron
    assert back.ccd.meta["EXPTIME"] == 60.0
    assert back.ccd.meta["DATE-OBS"].startswith("2024-01-15")
    ccd = CCDData.read(path, unit="adu")
    assert np.array_equal(ccd.data, sim.ccd.data)
    assert ccd.wcs.wcs.ctype[0] == "RA---TAN"
    with pytest.raises(FileExistsError, match="overwrite"):
        sim.write(path)
    sim.write(path, overwrite=True)


def test_instrument_replace_and_checks():
    inst = PAPER_2P5M.replace(read_noise=5 * u.electron)
    assert inst.read_noise == 5 * u.electron
    assert PAPER_2P5M.read_noise == 2 * u.electron
    assert PAPER_2P5M.replace(pixel_scale=0.3 * u.arcsec).pixel_scale.unit == u.arcsec / u.pix
    assert GWAC_LIKE.pixel_scale.value == pytest.approx(11.7)
    with pytest.raises(u.UnitsError, match="gain"):
        PAPER_2P5M.replace(gain=1.5 * u.s)
    with pytest.raises(TypeError, match="exposure_time"):
        PAPER_2P5M.replace(exposure_time=60)
    with pytest.raises(ValueError, match="aperture"):
        PAPER_2P5M.replace(aperture=-1 * u.m)
    assert isinstance(GWAC_LIKE, Instrument)


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"fwhm": -0.7 * u.arcsec}, ValueError, "fwhm"),
        ({"fwhm": 0 * u.arcsec}, ValueError, "fwhm"),
        ({"fwhm": 0.7 * u.m}, u.UnitsError, "fwhm"),
        ({"fwhm": 0.7}, TypeError, "fwhm"),
        ({"background": "cloud", "level": 1.5}, ValueError, "level"),
        ({"background": "cloud", "level": -0.1}, ValueError, "level"),
        ({"shape": (16, 64)}, ValueError, "shape"),
        ({"background": "fog"}, ValueError, "cloud, moon, shutter, trail, spikes"),
        ({"psf": "airy"}, ValueError, "psf"),
        ({"psf_defect": "ghost"}, ValueError, "psf_defect"),
        ({"defect_level": 2}, ValueError, "defect_level"),
        ({"instrument": "paper"}, TypeError, "instrument"),
        ({"catalog": [1, 2]}, TypeError, "catalog"),
    ],
)
def test_bad_input(kwargs, exc, name):
    kwargs.setdefault("shape", (64, 64))
    with pytest.raises(exc, match=name):
        simulate_image(**kwargs)


def test_sequence():
    frames = simulate_sequence(
        3, shape=(96, 96), seed=16, cloud_speed=(0, 7), level=0.7, seeing_jitter=0.1, n_stars=40
    )
    assert len(frames) == 3
    for f in frames[1:]:
        assert np.array_equal(f.catalog["ra"], frames[0].catalog["ra"])
        assert np.allclose(f.catalog["x"], frames[0].catalog["x"])
    # the clouds drift by 7 pixels per frame
    c0, c1 = frames[0].components["cloud"], frames[1].components["cloud"]
    assert np.allclose(c1[:, :-7], c0[:, 7:])
    assert not np.allclose(c1, c0)
    # the seeing changes and the time goes on
    fwhms = [f.ccd.meta["FWHM"] for f in frames]
    assert len(set(fwhms)) == 3
    from astropy.time import Time

    t = Time([f.ccd.meta["DATE-OBS"] for f in frames])
    assert np.allclose(np.diff(t.unix), 65.0)
    with pytest.raises(ValueError, match="n_frames"):
        simulate_sequence(0)


def test_sequence_options():
    frames = simulate_sequence(
        2,
        shape=(64, 64),
        seed=17,
        psf="gaussian",
        level=[0.2, 0.9],
        cloud_speed=(3, -4),
        n_stars=10,
        dither=0.5,
    )
    assert all(f.ccd.meta["PSFMODEL"] == "gaussian" for f in frames)
    assert frames[0].truth.max() <= 0.2 + 1e-6 < frames[1].truth.max()
    # dithered pointings: same sky positions, slightly different pixels
    _, i0, i1 = np.intersect1d(
        frames[0].catalog["ra"].value, frames[1].catalog["ra"].value, return_indices=True
    )
    assert len(i0) > 3
    dx = frames[0].catalog["x"][i0] - frames[1].catalog["x"][i1]
    assert 0 < np.max(np.abs(dx)) < 5
    with pytest.raises(TypeError, match="bogus"):
        simulate_sequence(2, shape=(64, 64), bogus=1)
    with pytest.raises(ValueError, match="level"):
        simulate_sequence(2, shape=(64, 64), level=[0.5, 1.5])


def test_galaxy_flux_conserved():
    cat = Table(
        {
            "ra": [150.1] * u.deg,
            "dec": [2.2] * u.deg,
            "phot_g_mean_mag": [16.5],
            "type": ["galaxy"],
        }
    )
    sim = simulate_image((128, 128), catalog=cat, seed=18)
    assert list(sim.catalog["type"]) == ["galaxy"]
    xy = (sim.catalog["x"][0], sim.catalog["y"][0])
    phot = aperture_photometry(sim.ccd.data - sky_adu(sim), CircularAperture(xy, r=60))
    assert phot["aperture_sum"][0] == pytest.approx(sim.catalog["flux_adu"][0].value, rel=0.03)


def test_large_clouds_cover_and_scattered_light():
    """cloud_cover sets the clouded fraction; cloud_scatter decides whether the sky dims,
    stays or brightens under the cloud."""
    kwargs = dict(
        shape=(256, 256),
        instrument=PAPER_2P5M,
        fwhm=0.7 * u.arcsec,
        background="cloud",
        level=0.9,
        outer_scale=1024,
        seed=3,
        n_stars=0,
        n_galaxies=0,
    )
    clear = simulate_image(**{**kwargs, "background": None}).ccd.data
    skies = {}
    for scatter in (0.0, 1.0, 2.5):
        sim = simulate_image(**kwargs, cloud_cover=0.8, cloud_scatter=scatter)
        assert abs((sim.truth > 0).mean() - 0.8) < 0.01
        assert sim.ccd.meta["CLDSCAT"] == scatter
        deep = sim.truth > 0.5
        skies[scatter] = np.median(sim.ccd.data[deep]) / np.median(clear[deep])
    assert skies[0.0] < 0.9  # dims with the stars (the bias stays)
    assert abs(skies[1.0] - 1) < 0.02  # a dark site: the sky stays
    assert skies[2.5] > 1.2  # lit cloud
    with pytest.raises(ValueError, match="not both"):
        simulate_image(**kwargs, cloud_cover=0.5, cloud_threshold=0.2)
    with pytest.raises(ValueError, match="cloud_scatter"):
        simulate_image(**kwargs, cloud_cover=0.5, cloud_scatter=-1)
