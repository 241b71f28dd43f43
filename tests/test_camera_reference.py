# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The camera reference, footprints, few-frame calibration and zero-shot honesty."""

from pathlib import Path

import numpy as np
import pytest
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning
from scipy import ndimage

from astro_aeqa import AEQualityEvaluator
from astro_aeqa._masking import conformal_threshold
from astro_aeqa._scoring import FrameInfo
from astro_aeqa.calibration import CameraReference
from astro_aeqa.exceptions import ModelFileError
from astro_aeqa.flags import decode_flags
from astro_aeqa.footprint import detect_footprint

DATA = Path(__file__).parent / "data" / "camera"


def _frame(seed, shape=(512, 512), *, sky=400.0, cloud=None):
    """Stars on a sky with Poisson noise; ``cloud`` covers the bottom 80 % and dims the
    stars by 2.5 mag: 'bright' adds 10 skies of scattered light, 'dim' dims the sky
    too, 'stars' dims the stars alone."""
    rng = np.random.default_rng(seed)
    stars = np.zeros(shape, np.float32)
    n = shape[0] * shape[1] // 400
    np.add.at(
        stars,
        (rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)),
        3e4 * 10 ** (-0.4 * rng.uniform(0, 6, n)),
    )
    stars = ndimage.gaussian_filter(stars, 1.3)
    truth = np.zeros(shape, np.float32)
    if cloud:
        truth[int(0.2 * shape[0]) :, :] = 1.0
    transmission = 10 ** (-0.4 * 2.5 * truth)
    sky_map = sky * (transmission if cloud == "dim" else 1.0) + (
        10 * sky * truth if cloud == "bright" else 0
    )
    signal = stars * transmission + sky_map
    data = rng.normal(signal, np.sqrt(signal + 36)).astype(np.float32)
    return CCDData(data, unit="electron", meta={"EXPTIME": 30.0}), truth


def _simulated(background, *, level, seed):
    """A 512x512 frame of the simulator's PAPER_2P5M telescope with one defect."""
    import astropy.units as u

    from astro_aeqa.simulation import PAPER_2P5M, simulate_image

    return simulate_image(
        (512, 512),
        instrument=PAPER_2P5M,
        fwhm=0.7 * u.arcsec,
        background=background,
        level=level,
        seed=seed,
    )


@pytest.fixture(scope="module")
def calibrated():
    ev = AEQualityEvaluator.pretrained(device="cpu")
    ev.calibrate([_frame(1)[0], _frame(2)[0]], progress_bar=False)
    return ev


@pytest.mark.parametrize("cloud", ["bright", "dim"])
def test_sky_term_places_a_cloud_over_most_of_the_frame(calibrated, cloud):
    # Against the camera's clear sky, the cloudy 80 % stands out and the
    # clear 20 % does not (judged against its own frame, it was the reverse).
    ccd, truth = _frame(3, cloud=cloud)
    scorer = calibrated._scorer()
    prepared = scorer.prepare(ccd)
    parts = scorer.parts(prepared)
    sky = scorer.sky_term_of(parts["sky"], FrameInfo(prepared.stats, ccd.shape, 30.0))
    p = calibrated.patch_size
    patch_truth = truth.reshape(8, p, 8, p).mean(axis=(1, 3))
    assert np.median(sky[patch_truth == 1]) > 1.0
    assert np.median(sky[patch_truth == 0]) < 0.1  # a clean patch scores about 0.2 in all
    res = calibrated.evaluate(ccd)
    assert res.camera_reference
    assert res.patch_mask[patch_truth == 1].mean() >= 0.9


@pytest.mark.parametrize("cloud", ["bright", "dim"])
def test_clear_patches_beside_a_cloud_are_not_masked(calibrated, cloud):
    # The clear strip beside the cloud: neither the network (which sees the
    # cloud's compressed noise scaled back to sky noise, and leaves the
    # background's jump at the edge out of the MAE) nor the transparency
    # term (the stars the masked cloud hides are not counted against its
    # clear neighbours) masks it.
    ccd, truth = _frame(3, cloud=cloud)
    res = calibrated.evaluate(ccd)
    p = calibrated.patch_size
    patch_truth = truth.reshape(8, p, 8, p).mean(axis=(1, 3))
    assert res.patch_mask[patch_truth == 1].mean() >= 0.9
    assert res.patch_mask[patch_truth == 0].mean() <= 0.125  # at most 1 of the 8


def test_stars_hidden_by_a_cloud_but_not_by_a_psf_defect_leave_the_star_counts(
    calibrated, monkeypatch
):
    # A patch whose sky alone is masked (a cloud) is left out of the star
    # counts of its neighbours; one masked for its structure (doubled or
    # defocused stars, here a raised MAE) stays in, so that the sources the
    # defect loses still raise the patches beside it.
    scorer = calibrated._scorer()
    p = calibrated.patch_size
    seen = {}

    def capture(parts, info, **kwargs):
        seen["coverage"] = parts["coverage"].copy()
        return None

    monkeypatch.setattr(scorer, "transparency", capture)
    ccd, truth = _frame(3, cloud="bright")
    scorer.score(scorer.prepare(ccd))
    patch_truth = truth.reshape(8, p, 8, p).mean(axis=(1, 3))
    assert (seen["coverage"][patch_truth == 1] == 0).all()
    assert (seen["coverage"][patch_truth == 0] > 0).all()

    parts_of = scorer.parts

    def structure_in_the_bottom_half(prepared, **kwargs):
        parts = parts_of(prepared, **kwargs)
        for key in ("mae", "raw_mae"):
            parts[key] = parts[key].copy()
            parts[key][4:] += 10.0  # far above the threshold
        return parts

    monkeypatch.setattr(scorer, "parts", structure_in_the_bottom_half)
    scores = scorer.score(scorer.prepare(_frame(3)[0])).scores
    assert (scores[4:] > scorer.default_threshold()).all()
    assert (seen["coverage"] > 0).all()


def test_transparency_term_finds_a_cloud_that_only_dims_the_stars(calibrated):
    ccd, truth = _frame(3, cloud="stars")
    res = calibrated.evaluate(ccd)
    p = calibrated.patch_size
    patch_truth = truth.reshape(8, p, 8, p).mean(axis=(1, 3))
    deficit = res.transparency
    assert np.nanmedian(deficit[patch_truth == 1]) > 5.0  # sigmas of missing stars
    assert np.nanmedian(deficit[patch_truth == 0]) < 2.0
    # the sky and the network see nothing: the stars' deficit masks it
    scorer = calibrated._scorer()
    parts = scorer.parts(scorer.prepare(ccd))
    assert np.median(parts["mae"][patch_truth == 1]) < res.threshold
    assert res.patch_mask[patch_truth == 1].mean() >= 0.8
    assert not res.patch_mask[patch_truth == 0].all()


def test_clean_frame_of_the_camera_is_not_masked(calibrated):
    res = calibrated.evaluate(_frame(4)[0])
    assert res.masked_fraction <= 0.05


def test_two_frames_calibrate_the_default_fpr_and_fprs_differ(calibrated):
    ref = calibrated.reference_scores_
    assert np.isfinite(conformal_threshold(ref, calibrated.fpr))
    assert conformal_threshold(ref, 0.01) > conformal_threshold(ref, 0.05)
    # half-patch-shifted grids: four times the patches of two 512x512 frames
    assert calibrated.n_reference_ >= 4 * 2 * 64 * 0.9
    # from two frames, the default fpr's threshold is never closer to a typical
    # clean patch than the paper's relative threshold
    scorer = calibrated._scorer()
    threshold, _, method = scorer.threshold(np.zeros(1), threshold=None, fpr=None)
    assert method == "fpr" and threshold >= 1.25 * np.median(ref)
    t01 = scorer.threshold(np.zeros(1), threshold=None, fpr=0.01)[0]
    t05 = scorer.threshold(np.zeros(1), threshold=None, fpr=0.05)[0]
    assert threshold > t01 > t05


def test_camera_reference_round_trips_through_the_model_file(calibrated, tmp_path):
    path = calibrated.save(tmp_path / "cam.aeqa.safetensors")
    loaded = AEQualityEvaluator.load(path)
    assert loaded.camera_ is not None
    assert loaded.camera_.sky_level == pytest.approx(calibrated.camera_.sky_level)
    ccd, _ = _frame(5, cloud="bright")
    np.testing.assert_array_equal(
        loaded.evaluate(ccd).patch_mask, calibrated.evaluate(ccd).patch_mask
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("noise", "x"), ("noise", -1.0), ("n_frames", 0), ("shape", [3]), ("sky_map", [[1.0]])],
)
def test_damaged_camera_reference_names_the_field(calibrated, field, value):
    d = calibrated.camera_.to_dict()
    d[field] = value
    with pytest.raises(ModelFileError, match=field):
        CameraReference.from_dict(d, source="model.safetensors")


def test_zero_shot_on_a_real_all_sky_camera_warns_and_keeps_its_clean_majority():
    ev = AEQualityEvaluator.pretrained(device="cpu")
    with pytest.warns(AstropyUserWarning, match="calibrate"):
        res = ev.evaluate(DATA / "iceact_images_starry.fits.bz2")
    assert res.threshold_method == "self"
    assert res.masked_fraction <= 0.05
    assert res.footprint is not None and 0.7 < res.footprint.mean() < 0.9  # the sky circle


def test_calibrated_on_a_clear_all_sky_frame_masks_the_overcast_one():
    ev = AEQualityEvaluator.pretrained(device="cpu")
    ev.calibrate(DATA / "iceact_images_starry.fits.bz2", progress_bar=False)
    cloudy = ev.evaluate(DATA / "iceact_images_cloudy.fits.bz2")
    clear = ev.evaluate(DATA / "iceact_images_starry.fits.bz2")
    assert cloudy.mask[cloudy.footprint].mean() >= 0.8
    assert clear.mask[clear.footprint].mean() <= 0.05


def test_footprint_of_an_all_sky_circle_and_of_overscan():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:300, :400]
    circle = np.where(np.hypot(y - 150, x - 200) < 140, 2000.0, 100.0)
    fp = detect_footprint(rng.normal(circle, np.sqrt(circle)))
    assert fp[150, 200] and not fp[5, 5] and not fp[295, 395]
    assert abs(fp.mean() - (np.pi * 140**2) / (300 * 400)) < 0.03
    raw = rng.normal(1000.0, 30.0, (256, 300))
    raw[:, 270:] = rng.normal(300.0, 3.0, (256, 30))  # overscan strip
    fp = detect_footprint(raw)
    assert not fp[:, 275:].any() and fp[:, :260].all()


def test_footprint_keeps_an_ordinary_frame_and_an_interior_dark_cloud():
    rng = np.random.default_rng(1)
    data = rng.normal(1000.0, 30.0, (256, 256))
    assert detect_footprint(data).all()
    data[80:180, 80:180] = rng.normal(150.0, 10.0, (100, 100))  # dark, flat, not at a border
    assert detect_footprint(data).all()


def test_outside_footprint_is_not_scored_nor_masked_and_has_its_flag():
    # (a calibrated camera keeps the footprint of its clean frames instead)
    ev = AEQualityEvaluator.pretrained(device="cpu")
    ccd, _ = _frame(7)
    data = ccd.data.copy()
    data[:, 448:] = np.random.default_rng(2).normal(5.0, 2.0, (512, 64))  # an overscan-like strip
    res = ev.evaluate(CCDData(data, unit="electron", meta=ccd.meta))
    assert res.footprint is not None and not res.footprint[:, 460:].any()
    assert np.isnan(res.patch_scores[:, -1]).all()
    assert not res.mask[:, 460:].any()
    assert decode_flags(res.flag_plane(), "OUTSIDE_FOOTPRINT")[:, 460:].all()
    assert not decode_flags(res.flag_plane(), "LOW_QUALITY")[:, 460:].any()


def test_nan_pixels_are_in_the_output_mask(calibrated):
    ccd, _ = _frame(8)
    data = ccd.data.copy()
    data[100:110, 200:210] = np.nan
    out = calibrated.mask(CCDData(data, unit="electron", meta=ccd.meta))
    assert out.mask[100:110, 200:210].all()
    assert np.isnan(ccd.data).sum() == 0  # the input is untouched


def test_trails_are_masked_at_pixel_level_flagged_and_written(tmp_path):
    from astro_aeqa.io import read_aeqa_fits

    ev = AEQualityEvaluator.pretrained(device="cpu")
    sim = _simulated("trail", level=0.3, seed=3)
    res = ev.evaluate(sim.ccd)
    assert len(res.trails) == 1
    on_trail = sim.truth > 0.05
    assert res.mask[on_trail].mean() >= 0.95
    assert res.trail_mask.sum() < 0.1 * res.trail_mask.size  # a band, not whole patches
    assert decode_flags(res.flag_plane(), "TRAIL")[res.trail_mask].all()
    ev.write_masked(sim.ccd, tmp_path / "out.fits")
    products = read_aeqa_fits(tmp_path / "out.fits")
    assert products.header["AEQATRN"] == 1
    assert len(products.trails) == 1
    assert products.trails["length"][0] == pytest.approx(res.trails["length"][0])
    off = AEQualityEvaluator.pretrained(device="cpu", trails=False).evaluate(sim.ccd)
    assert off.trails is None and off.trail_mask is None


def test_aeqa_info_shows_the_camera_reference(calibrated, tmp_path, capsys):
    from astro_aeqa.cli import main

    path = calibrated.save(tmp_path / "cam.aeqa.safetensors")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "camera ref.     2 clean frames: sky" in out and "in 30 s" in out
    assert main(["info", "default"]) == 0
    assert "camera ref.     none: zero-shot" in capsys.readouterr().out


def test_a_shutter_shadow_at_the_edge_is_not_a_footprint():
    sim = _simulated("shutter", level=0.7, seed=7)
    assert detect_footprint(sim.ccd.data).all()
