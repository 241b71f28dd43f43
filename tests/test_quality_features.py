# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Issue 7: calibrated false-mask rate, automatic patch size, star-aware masks."""

import copy

import numpy as np
import pytest
from astropy import units as u

from astro_aeqa import AEQualityEvaluator
from astro_aeqa._stars import (
    auto_patch_size,
    bright_star_mask,
    find_stars,
    measure_fwhm,
    psf_shape_map,
)
from astro_aeqa.exceptions import InputDataError
from astro_aeqa.flags import AEQAFlags
from astro_aeqa.simulation import PAPER_2P5M, simulate_image


def _frame(seed, shape=(256, 256), fwhm=0.65, **kwargs):
    return simulate_image(
        shape=shape, instrument=PAPER_2P5M, fwhm=fwhm * u.arcsec, seed=seed, **kwargs
    )


# -- patch size from the FWHM ------------------------------------------------


def test_auto_patch_size_rule():
    assert auto_patch_size(2.0) == 40
    assert auto_patch_size(2.01) == 48  # rounded up to a multiple of 8
    assert auto_patch_size(0.5) == 32  # never below the minimum
    assert auto_patch_size(50.0) == 128  # nor above the maximum
    assert auto_patch_size(3.0, factor=4, minimum=8) == 16
    # the paper's floor: never below twice the FWHM, whatever the factor
    assert auto_patch_size(10.0, factor=1, minimum=8) == 24
    for bad in (0, -1.0, np.nan):
        with pytest.raises(ValueError, match="positive number of pixels"):
            auto_patch_size(bad)


@pytest.mark.parametrize("fwhm", [0.6, 1.2])
def test_measure_fwhm_tracks_the_psf(fwhm):
    sim = _frame(3, fwhm=fwhm, psf="gaussian")
    measured = measure_fwhm(sim.ccd.data)
    assert measured == pytest.approx(sim.ccd.meta["FWHMPIX"], rel=0.1)


def test_measure_fwhm_without_stars_says_so():
    rng = np.random.default_rng(0)
    with pytest.raises(InputDataError, match="no isolated bright star"):
        measure_fwhm(rng.normal(100.0, 5.0, (128, 128)))


# -- stars ---------------------------------------------------------------------


def test_find_stars_rejects_smeared_stars():
    sim = _frame(
        5,
        shape=(512, 512),
        psf_defect="elongated",
        defect_level=0.7,
        defect_region=np.s_[:, :256],
    )
    found = find_stars(sim.ccd.data, fwhm=sim.ccd.meta["FWHMPIX"])
    bright = found["peak_snr"] > 20
    left = found["x"] < 240
    right = found["x"] > 272
    assert (bright & right).sum() >= 3 and (bright & left).sum() >= 3
    assert found["star"][bright & right].mean() > 0.6
    assert found["star"][bright & left].mean() < 0.2


def _photutils_catalog(data, threshold=5.0, n_pixels=5):
    from photutils.segmentation import SourceCatalog, detect_sources

    from astro_aeqa._preprocessing import sky_statistics

    stats = sky_statistics(data, np.isfinite(data))
    snr = ((data - stats.level) / stats.noise).astype(np.float32)
    cat = SourceCatalog(snr, detect_sources(snr, threshold, n_pixels))
    columns = {
        "x": cat.x_centroid,
        "y": cat.y_centroid,
        "peak_snr": cat.max_value,
        "fwhm": cat.fwhm.value,
        "elongation": cat.elongation.value,
    }
    return {k: np.asarray(v, float) for k, v in columns.items()}, stats


@pytest.mark.parametrize("min_peak", [None, 50.0])
def test_find_stars_measures_what_photutils_measures(min_peak):
    # windows that must grow (a trail, a cloud merging stars) and stars at the edges
    sim = _frame(7, shape=(384, 512), background="trail", level=1.0)
    ref, stats = _photutils_catalog(sim.ccd.data)
    glow = 30 * stats.noise * np.outer(np.hanning(384), np.hanning(160))
    data = sim.ccd.data.copy()
    data[:, :160] += glow  # a patch of scattered light above the threshold
    ref, stats = _photutils_catalog(data)
    found = find_stars(data, stats=stats, min_peak=min_peak)
    keep = np.ones(len(ref["x"]), bool) if min_peak is None else ref["peak_snr"] >= min_peak
    assert keep.sum() >= 5 and len(found) == keep.sum()
    order_ref = np.lexsort((ref["y"][keep], ref["x"][keep]))
    order = np.lexsort((np.asarray(found["y"]), np.asarray(found["x"])))
    for name in ("x", "y", "peak_snr", "fwhm", "elongation"):
        np.testing.assert_allclose(
            np.asarray(found[name], float)[order], ref[name][keep][order_ref], rtol=1e-6
        )
    assert (ref["elongation"] > 3).any()  # the trail is in the frame


def test_bright_star_mask_covers_stars_not_trails():
    sim = _frame(5, background="trail", level=1.0)
    data = sim.ccd.data.copy()
    mask, stars = bright_star_mask(data, fwhm=sim.ccd.meta["FWHMPIX"])
    np.testing.assert_array_equal(data, sim.ccd.data)  # input untouched
    assert len(stars) >= 2
    # every bright star's centre is covered, the trail is not
    assert mask[np.rint(stars["y"]).astype(int), np.rint(stars["x"]).astype(int)].all()
    trail = sim.components["trail"] > 0.2 if "trail" in sim.components else sim.truth > 0.2
    assert trail.sum() > 100
    assert (mask & trail).sum() < 0.05 * trail.sum()
    # a catalogue restricts the stars to its positions; an empty one keeps none
    empty, none = bright_star_mask(data, fwhm=sim.ccd.meta["FWHMPIX"], catalog_xy=np.zeros((0, 2)))
    assert not empty.any() and len(none) == 0


@pytest.mark.parametrize("defect", ["elongated", "defocus"])
def test_psf_shape_map_sees_misshapen_stars(defect):
    sim = _frame(
        5, shape=(512, 512), psf_defect=defect, defect_level=0.7, defect_region=np.s_[:, :256]
    )
    fwhm = sim.ccd.meta["FWHMPIX"]
    found = find_stars(sim.ccd.data, fwhm=fwhm, min_peak=20)
    shape_map = psf_shape_map(found, (512, 512), 64, fwhm)
    assert shape_map.shape == (8, 8)
    # away from the edge of the defect, which reach=2 patches blurs
    bad, good = shape_map[:, :2], shape_map[:, 6:]
    assert np.nanmedian(bad) > np.nanmedian(good) + 0.2
    assert abs(np.nanmedian(good)) < 0.3  # round stars of the reference FWHM: about 0
    assert np.isnan(psf_shape_map(found[:0], (512, 512), 64, fwhm)).all()


# -- the evaluator ----------------------------------------------------------


def test_patch_size_auto_from_the_references(reference_frames, tmp_path):
    from conftest import TINY_CONFIG

    from astro_aeqa.nn import AutoencoderConfig

    ev = AEQualityEvaluator(
        AutoencoderConfig(**TINY_CONFIG),
        patch_size="auto",
        tile_size=64,
        overlap=8,
        crop_size=64,
        device="cpu",
    )
    assert ev.patch_size is None
    ev.fit(reference_frames, n_epochs=1, batch_size=4, steps_per_epoch=2, progress_bar=False)
    fwhm = measure_fwhm(reference_frames[0].data)
    assert ev.reference_fwhm_ == pytest.approx(fwhm, rel=0.15)
    assert ev.patch_size == auto_patch_size(ev.reference_fwhm_, maximum=64)
    res = ev.evaluate(reference_frames[0], threshold=1.0)  # too few patches for an fpr
    assert res.patch_scores.shape == (-(-256 // ev.patch_size),) * 2
    ev.save(tmp_path / "auto.safetensors")
    back = AEQualityEvaluator.load(tmp_path / "auto.safetensors")
    assert back.patch_size == ev.patch_size
    assert back.reference_fwhm_ == pytest.approx(ev.reference_fwhm_)


def test_patch_size_auto_needs_stars():
    ev = AEQualityEvaluator(patch_size="auto", device="cpu")
    flat = np.random.default_rng(1).normal(100.0, 5.0, (128, 128))
    with pytest.raises(InputDataError, match="explicit patch_size"):
        ev.fit([flat], n_epochs=1, steps_per_epoch=1, progress_bar=False)


def test_false_mask_rate_tracks_fpr(tiny_evaluator):
    """Calibrated on clean frames, new clean frames exceed the threshold at about fpr."""
    ev = copy.deepcopy(tiny_evaluator)
    ev.calibrate([_frame(300 + i).ccd for i in range(8)], progress_bar=False)
    scores = np.concatenate(
        [ev.evaluate(_frame(400 + i).ccd).patch_scores.ravel() for i in range(8)]
    )
    for fpr in (0.05, 0.1, 0.2):
        threshold = ev._scorer().threshold(scores, threshold=None, fpr=fpr)[0]
        rate = np.mean(scores > threshold)
        assert fpr / 2 <= rate <= 2 * fpr, (fpr, rate)


def test_star_aware_keeps_star_patches_and_masks_defects(tiny_evaluator):
    ev = copy.deepcopy(tiny_evaluator)
    clean = _frame(500, shape=(256, 256)).ccd
    ev.star_aware = False
    plain = ev.evaluate(clean)
    ev.star_aware = True
    aware = ev.evaluate(clean, threshold=plain.threshold)
    # the evaluator leaves out round stars down to 20 sigma
    stars, _ = bright_star_mask(clean.data, fwhm=ev.reference_fwhm_, min_snr=20)
    p = ev.patch_size
    has_star = stars.reshape(256 // p, p, 256 // p, p).any(axis=(1, 3))
    changed = ~np.isclose(aware.patch_scores, plain.patch_scores)
    # only patches holding a bright star change, and they score lower without it
    assert has_star.any() and changed.any()
    assert not (changed & ~has_star).any()
    assert np.mean(aware.patch_scores[changed] - plain.patch_scores[changed]) < 0
    kept = aware.flag_plane() & AEQAFlags.STAR_KEPT
    raised = (plain.patch_scores > plain.threshold) & ~aware.patch_mask
    assert bool(kept.any()) == bool(raised.any())
    # a shutter shadow is no star: still masked
    bad = _frame(501, background="shutter", level=1.0)
    res = ev.evaluate(bad.ccd, threshold=plain.threshold)
    truth = bad.truth > 0.5
    assert res.mask[truth].mean() > 0.5


def test_psf_term_scores_misshapen_stars_and_is_saved(tiny_evaluator, tmp_path):
    ev = copy.deepcopy(tiny_evaluator)
    assert ev.psf_term
    ev.calibrate([_frame(300 + i).ccd for i in range(4)], progress_bar=False)
    scale = ev.psf_calibration_
    assert scale is not None and scale["psf_mad"] > 0 and scale["mae_mad"] > 0
    bad = _frame(510, psf_defect="defocus", defect_level=0.8, defect_region=np.s_[:, :128]).ccd
    with_psf = ev.evaluate(bad)
    ev.psf_term = False
    without = ev.evaluate(bad, threshold=with_psf.threshold)
    # the PSF term can only raise a patch score, and it does where stars are defocused
    assert (with_psf.patch_scores >= without.patch_scores - 1e-12).all()
    defocused = np.s_[:, :2]  # patches of 32 px well inside the defect
    assert with_psf.patch_scores[defocused].mean() > without.patch_scores[defocused].mean()
    # the scale travels with the model file
    ev.psf_term = True
    ev.save(tmp_path / "psf.safetensors")
    back = AEQualityEvaluator.load(tmp_path / "psf.safetensors")
    assert back.psf_term and back.psf_calibration_ == pytest.approx(scale)
    np.testing.assert_allclose(back.evaluate(bad).patch_scores, with_psf.patch_scores)


def test_psf_term_without_stars_to_calibrate_is_off(tiny_evaluator):
    ev = copy.deepcopy(tiny_evaluator)
    flat = [np.random.default_rng(i).normal(100.0, 5.0, (256, 256)) for i in range(2)]
    ev.calibrate(flat, progress_bar=False)  # logs a warning: no star to calibrate on
    assert ev.psf_calibration_ is None
    frame = _frame(520).ccd
    scored = ev.evaluate(frame, threshold=1.0)
    ev.psf_term = False
    np.testing.assert_array_equal(
        scored.patch_scores, ev.evaluate(frame, threshold=1.0).patch_scores
    )
