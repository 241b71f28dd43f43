# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The evaluator: scores, masks, CCDData and FITS products, model files, bad input."""

import logging
import shutil

import numpy as np
import pytest
import torch
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData

from astro_aeqa import AEQualityEvaluator, QualityResult, aeqa_mask
from astro_aeqa.calibration import Calibration
from astro_aeqa.exceptions import AEQAWarning, InputDataError, ModelFileError
from astro_aeqa.flags import decode_flags
from astro_aeqa.nn import native_bfloat16, torch_threads
from astro_aeqa.simulation import PAPER_2P5M, simulate_image


@pytest.fixture(scope="module")
def clean_frame():
    return simulate_image(
        shape=(256, 256), instrument=PAPER_2P5M, fwhm=0.65 * u.arcsec, background=None, seed=7
    ).ccd


@pytest.fixture(scope="module")
def moon_frame():
    return simulate_image(
        shape=(256, 256),
        instrument=PAPER_2P5M,
        fwhm=0.65 * u.arcsec,
        background="moon",
        level=1.0,
        seed=7,
    )


def _snapshot(ccd):
    return (ccd.data.copy(), None if ccd.mask is None else ccd.mask.copy(), dict(ccd.meta))


def test_evaluate_shapes_and_image_score(tiny_evaluator, clean_frame):
    res = tiny_evaluator.evaluate(clean_frame)
    assert isinstance(res, QualityResult)
    assert res.patch_scores.shape == (8, 8)
    assert res.residual.shape == clean_frame.shape
    assert res.mask.shape == clean_frame.shape and res.mask.dtype == bool
    assert res.score == pytest.approx(np.nanmean(res.patch_scores))
    assert np.all(res.pvalues > 0) and np.all(res.pvalues <= 1)
    assert res.threshold_method == "fpr"
    # the score map carries the image WCS sliced to the patch grid
    sky = res.score_map.wcs.pixel_to_world(0, 0)
    expected = clean_frame.wcs.pixel_to_world(15.5, 15.5)
    assert sky.separation(expected).to(u.arcsec).value < 0.01
    table = res.to_table()
    assert len(table) == 64
    assert {"score", "relative_score", "pvalue", "masked", "ra", "dec"} <= set(table.colnames)


def test_relative_scores_are_one_on_typical_reference_patch(tiny_evaluator, reference_frames):
    res = tiny_evaluator.evaluate(reference_frames[0])
    assert 0.5 < np.nanmedian(res.relative_scores) < 1.5


def test_contaminated_frame_scores_higher(tiny_evaluator, clean_frame, moon_frame):
    clean = tiny_evaluator.evaluate(clean_frame)
    moon = tiny_evaluator.evaluate(moon_frame.ccd)
    assert moon.score > clean.score
    # the most contaminated patches score above the least contaminated ones
    truth = moon_frame.truth.reshape(8, 32, 8, 32).mean(axis=(1, 3))
    worst = moon.patch_scores[truth >= np.quantile(truth, 0.75)]
    best = moon.patch_scores[truth <= np.quantile(truth, 0.25)]
    assert np.median(worst) > np.median(best)


def test_mask_returns_new_ccd_and_ors_the_input_mask(tiny_evaluator, moon_frame):
    ccd = moon_frame.ccd.copy()
    ccd.mask = np.zeros(ccd.shape, bool)
    ccd.mask[:5, :5] = True
    before = _snapshot(ccd)
    out = tiny_evaluator.mask(ccd, threshold=0.0)  # everything above 0: all patches masked
    assert out is not ccd
    np.testing.assert_array_equal(ccd.data, before[0])
    np.testing.assert_array_equal(ccd.mask, before[1])
    assert dict(ccd.meta) == before[2]
    assert out.mask.all()
    high = tiny_evaluator.mask(ccd, threshold=1e9)  # nothing new: the input mask survives
    np.testing.assert_array_equal(high.mask, ccd.mask)
    for key in ("AEQAVER", "AEQAMOD", "AEQASCOR", "AEQATHR", "AEQAPSZ", "AEQAMFR"):
        assert key in out.meta
    assert any("astro_aeqa" in str(line) for line in out.meta["HISTORY"])


def test_aeqa_mask_is_the_ccdproc_step(tiny_evaluator, clean_frame):
    out = aeqa_mask(clean_frame, tiny_evaluator, threshold=1e9)
    assert isinstance(out, CCDData)
    assert not out.mask.any()
    with pytest.raises(TypeError, match="fitted AEQualityEvaluator"):
        aeqa_mask(clean_frame, "small")


def test_fpr_controls_the_threshold(tiny_evaluator, clean_frame):
    loose = tiny_evaluator.evaluate(clean_frame, fpr=0.2)
    strict = tiny_evaluator.evaluate(clean_frame, fpr=0.05)
    assert strict.threshold > loose.threshold
    assert strict.patch_mask.sum() <= loose.patch_mask.sum()
    # 128 reference patches cannot resolve a 0.1 % false-mask rate: say so, mask nothing
    with pytest.warns(AEQAWarning, match="too few for fpr=0.001"):
        too_strict = tiny_evaluator.evaluate(clean_frame, fpr=0.001)
    assert too_strict.threshold == np.inf and not too_strict.mask.any()
    with pytest.raises(ValueError, match="either threshold or fpr"):
        tiny_evaluator.evaluate(clean_frame, fpr=0.1, threshold=1.0)
    with pytest.raises(ValueError, match="fpr must lie"):
        tiny_evaluator.evaluate(clean_frame, fpr=1.5)


def test_scores_do_not_depend_on_batch_size_or_overlap(tiny_evaluator, clean_frame):
    base = tiny_evaluator.evaluate(clean_frame).score
    batch, overlap = tiny_evaluator.batch_size, tiny_evaluator.overlap
    try:
        tiny_evaluator.batch_size = 3
        assert tiny_evaluator.evaluate(clean_frame).score == pytest.approx(base, rel=1e-4)
        tiny_evaluator.overlap = 16
        assert tiny_evaluator.evaluate(clean_frame).score == pytest.approx(base, rel=0.01)
    finally:
        tiny_evaluator.batch_size, tiny_evaluator.overlap = batch, overlap


def test_scores_do_not_depend_on_the_number_of_threads(tiny_evaluator):
    # several tile rows and patch-row bands, stars for star-aware scoring
    frame = simulate_image(shape=(300, 700), background="trail", level=1.0, seed=3).ccd
    tile = tiny_evaluator.tile_size
    tiny_evaluator.tile_size = 96  # tiles of 96 px in 64-px-thick rows: bands of 2-3 patches
    try:
        with torch_threads(1):
            one = tiny_evaluator.evaluate(frame)
        with torch_threads(3):
            three = tiny_evaluator.evaluate(frame)
            assert torch.get_num_threads() == 3  # the scoring's own setting is undone
    finally:
        tiny_evaluator.tile_size = tile
    np.testing.assert_array_equal(three.patch_scores, one.patch_scores)
    np.testing.assert_array_equal(three.residual, one.residual)
    np.testing.assert_array_equal(three.flag_plane(), one.flag_plane())


def test_tile_tasks_cover_the_frame_once(tiny_evaluator):
    tile = tiny_evaluator.tile_size
    tiny_evaluator.tile_size = 96
    try:
        t, padded, tasks = tiny_evaluator._scorer().tile_tasks((300, 700), workers=2)
    finally:
        tiny_evaluator.tile_size = tile
    covered = np.zeros(padded, int)
    for _, regions, _ in tasks:
        for y1, y2, x1, x2 in regions:
            covered[y1:y2, x1:x2] += 1
    assert (covered == 1).all()
    done = [rows for _, _, rows in tasks if rows is not None]
    assert done == sorted(done) and done[-1] == padded[0]  # rows complete top to bottom


def test_every_input_kind_gives_the_same_score(tiny_evaluator, clean_frame, tmp_path):
    path = tmp_path / "frame.fits"
    clean_frame.write(path)
    base = tiny_evaluator.evaluate(clean_frame).score
    for image in (path, str(path), NDData(clean_frame.data, wcs=clean_frame.wcs), clean_frame.data):
        assert tiny_evaluator.evaluate(image).score == pytest.approx(base, rel=1e-5)
    with fits.open(path) as hdul:
        assert tiny_evaluator.evaluate(hdul).score == pytest.approx(base, rel=1e-5)
        assert tiny_evaluator.evaluate(hdul[0]).score == pytest.approx(base, rel=1e-5)


def test_non_finite_and_masked_pixels_are_handled(tiny_evaluator, clean_frame):
    ccd = clean_frame.copy()
    ccd.data[10:20, 10:20] = np.nan
    ccd.data[100, 100] = np.inf
    res = tiny_evaluator.evaluate(ccd)
    assert np.isfinite(res.score)
    assert np.all(np.isnan(res.residual[10:20, 10:20]))
    flags = res.flag_plane()
    assert decode_flags(flags, "NON_FINITE")[15, 15]
    assert decode_flags(flags, "NON_FINITE")[100, 100]
    assert not decode_flags(flags, "NON_FINITE")[50, 50]
    assert not res.finite[15, 15] and res.finite[50, 50]
    # a frame without NaN or inf: finite is an all-True view of no memory
    whole = tiny_evaluator.evaluate(clean_frame)
    assert whole.finite.all() and not whole.finite.flags.writeable
    assert whole.finite.strides == (0, 0) and whole.finite.shape == clean_frame.shape
    assert not decode_flags(whole.flag_plane(), "NON_FINITE").any()


def test_integer_data_with_bzero(tiny_evaluator, clean_frame, tmp_path):
    path = tmp_path / "int.fits"
    hdu = fits.PrimaryHDU(np.clip(clean_frame.data, 0, 60000).astype(np.uint16))
    hdu.writeto(path)
    assert fits.getheader(path)["BZERO"] == 32768
    res = tiny_evaluator.evaluate(path)
    assert np.isfinite(res.score)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((2, 64, 64)), "2-D"),
        (np.full((64, 64), np.nan), "NaN or inf"),
        (np.ones((16, 16)), "smaller than one patch"),
    ],
)
def test_bad_images_raise_clear_errors(tiny_evaluator, image, match):
    with pytest.raises((InputDataError, ValueError), match=match):
        tiny_evaluator.evaluate(image)


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="device"):
        AEQualityEvaluator(device="tpu")
    with pytest.raises(ValueError, match="model must be one of the presets"):
        AEQualityEvaluator("huge")
    with pytest.raises(ValueError, match="normalization"):
        AEQualityEvaluator(normalization="zscale")
    with pytest.raises(RuntimeError, match="untrained"):
        AEQualityEvaluator().evaluate(np.ones((128, 128)))


def test_model_file_round_trip(tiny_evaluator, clean_frame, tmp_path):
    path = tmp_path / "survey.aeqa.safetensors"
    tiny_evaluator.save(path)
    with pytest.raises(FileExistsError):
        tiny_evaluator.save(path)
    loaded = AEQualityEvaluator.load(path, device="cpu")
    assert loaded.patch_size == tiny_evaluator.patch_size
    np.testing.assert_allclose(loaded.reference_scores_, tiny_evaluator.reference_scores_)
    a = tiny_evaluator.evaluate(clean_frame)
    b = loaded.evaluate(clean_frame)
    np.testing.assert_allclose(a.patch_scores, b.patch_scores, rtol=1e-6)
    assert a.threshold == pytest.approx(b.threshold)
    with pytest.raises(ModelFileError, match="patch_size=32"):
        AEQualityEvaluator.load(path, patch_size=64)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="truncated.safetensors"):
        AEQualityEvaluator.load(truncated)


def test_write_masked_fits_layout(tiny_evaluator, moon_frame, tmp_path):
    path = tmp_path / "masked.fits"
    res = tiny_evaluator.write_masked(moon_frame.ccd, path, threshold=0.0)
    with fits.open(path) as hdul:
        names = [hdu.name for hdu in hdul]
        assert names[:2] == ["PRIMARY", "MASK"]
        assert "AEQA_SCORE" in names and "AEQA_FLAGS" in names
        np.testing.assert_array_equal(hdul[0].data, moon_frame.ccd.data)
        assert hdul["AEQA_SCORE"].data.shape == res.patch_scores.shape
        assert hdul["AEQA_FLAGS"].data.dtype.kind == "u"
        assert hdul[0].header["AEQAPSZ"] == 32
    back = CCDData.read(path)
    assert back.mask.all()
    with pytest.raises(FileExistsError, match="overwrite"):
        tiny_evaluator.write_masked(moon_frame.ccd, path)


def test_fit_accepts_an_image_file_collection(reference_frames, tmp_path):
    from ccdproc import ImageFileCollection

    from astro_aeqa.nn import AutoencoderConfig

    for i, ccd in enumerate(reference_frames[:2]):
        out = ccd.copy()
        out.meta["IMAGETYP"] = "LIGHT" if i == 0 else "BIAS"
        out.write(tmp_path / f"ref{i}.fits")
    collection = ImageFileCollection(tmp_path)
    ev = AEQualityEvaluator(
        AutoencoderConfig(base_channels=4, n_down=1, n_res_blocks=1, max_channels=8),
        patch_size=32,
        tile_size=64,
        device="cpu",
    )
    ev.fit(
        collection,
        filter={"imagetyp": "LIGHT"},
        n_epochs=1,
        steps_per_epoch=2,
        batch_size=4,
        progress_bar=False,
    )
    assert ev.training_["n_frames"] == 1
    assert ev.is_fitted


def test_frame_smaller_than_a_tile_is_scored(tiny_evaluator, clean_frame):
    res = tiny_evaluator.evaluate(clean_frame.data[:48, :40])
    assert res.patch_scores.shape == (2, 2)
    assert res.residual.shape == (48, 40)
    assert np.isfinite(res.score)


def test_tiles_default_large_for_inference_and_small_for_training():
    ev = AEQualityEvaluator(patch_size=64)
    assert (ev.tile_size, ev.overlap, ev.crop_size) == (512, 32, 128)
    ev = AEQualityEvaluator(patch_size=128)
    assert (ev.tile_size, ev.crop_size) == (512, 256)
    with pytest.raises(ValueError, match="crop_size must be a multiple of 16"):
        AEQualityEvaluator(crop_size=100)


def test_frame_shorter_than_a_tile_is_scored_in_one_tile_of_its_size(tiny_evaluator):
    # 200 rounds up to 208 for this model (multiple 4 -> 200 itself); the frame
    # is scored without reflecting it out to a full tile.
    assert tiny_evaluator.reconstructor_.tile_side((200, 900), tiny_evaluator.tile_size) == min(
        tiny_evaluator.tile_size, 200
    )
    ev = AEQualityEvaluator()  # multiple 16
    assert ev.reconstructor_.tile_side((300, 5000), ev.tile_size) == 304
    assert ev.reconstructor_.tile_side((4096, 4096), ev.tile_size) == 512


def test_batch_of_tiles_adapts_to_the_activation_budget():
    small, paper = AEQualityEvaluator("small"), AEQualityEvaluator("paper")
    assert (
        small.reconstructor_.tiles_per_batch(512) == small.batch_size
    )  # 0.75 values per pixel: fits
    # the paper's 64-channel full-resolution layers: 200 MB a 512x512 tile
    assert paper.reconstructor_.tiles_per_batch(512) == 2
    assert paper.reconstructor_.tiles_per_batch(4096) == 1


def test_precision_option(tiny_evaluator, clean_frame):
    with pytest.raises(ValueError, match="precision must be one of"):
        AEQualityEvaluator(precision="float16")
    assert AEQualityEvaluator().precision == "auto"
    try:
        tiny_evaluator.precision = "auto"  # bfloat16 only where the device has it natively
        native = native_bfloat16(tiny_evaluator.device)
        assert tiny_evaluator.reconstructor_.autocast_dtype() == (
            torch.bfloat16 if native else None
        )
        tiny_evaluator.precision = "float32"
        ref = tiny_evaluator.evaluate(clean_frame)
        tiny_evaluator.precision = "bfloat16"
        low = tiny_evaluator.evaluate(clean_frame, threshold=ref.threshold)
    finally:
        tiny_evaluator.precision = "auto"
    # bfloat16 keeps 8 mantissa bits: scores move, but by well under 1 %
    assert low.score != ref.score
    assert abs(low.score - ref.score) / ref.score < 0.01
    assert np.mean(low.patch_mask != ref.patch_mask) <= 0.005


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
def test_write_masked_from_a_file_keeps_its_pixels_and_dtype(
    tiny_evaluator, clean_frame, tmp_path, dtype
):
    data = np.clip(clean_frame.data, 0, 60000).astype(dtype)
    source = tmp_path / "in.fits"
    fits.PrimaryHDU(data).writeto(source)
    tiny_evaluator.write_masked(source, tmp_path / "out.fits")
    with fits.open(tmp_path / "out.fits") as hdul:
        assert (
            hdul[0].data.dtype == np.dtype(dtype).newbyteorder(">") or hdul[0].data.dtype == dtype
        )
        np.testing.assert_array_equal(hdul[0].data, data)


@pytest.mark.skipif(
    not (shutil.which("cc") or shutil.which("gcc")), reason="torch.compile needs a C compiler"
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own, while compiling
def test_compiled_inference_scores_frames_of_several_shapes(clean_frame):
    # small's space-to-depth stem made inductor fail on a second frame shape
    # with dynamic shapes (torch 2.13); tasks on two threads compiled at once
    ev = AEQualityEvaluator.pretrained(device="cpu", precision="float32")
    frames = (clean_frame, simulate_image(shape=(200, 300), seed=5).ccd)
    eager = [ev.evaluate(f).score for f in frames]
    ev.compile = True
    assert [ev.evaluate(f).score for f in frames] == pytest.approx(eager, rel=1e-4)


def test_too_small_a_calibration_is_reported_when_it_is_made(caplog, monkeypatch):
    # the aeqa command stops its logger propagating; caplog listens at the root
    monkeypatch.setattr(logging.getLogger("astro_aeqa"), "propagate", True)
    ev = AEQualityEvaluator.pretrained(device="cpu")
    ev.fpr = 0.001  # needs 999 clean patches
    with caplog.at_level("WARNING", logger="astro_aeqa"):
        Calibration.from_scores(np.linspace(0.1, 0.3, 50), fpr=ev.fpr)
    assert "too few for fpr=0.001 (it needs 999)" in caplog.text
    assert "calibrate()" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="astro_aeqa"):
        Calibration.from_scores(np.linspace(0.1, 0.3, 1000), fpr=ev.fpr)
    assert "too few" not in caplog.text


def test_large_frames_give_the_heaps_free_memory_back_after_each_row(
    tiny_evaluator, moon_frame, monkeypatch
):
    # a large frame releases the C heap's free blocks after each row of
    # tiles (utils.release_free_memory, glibc's malloc_trim): the same scores
    from astro_aeqa import _scoring
    from astro_aeqa.utils import release_free_memory

    assert release_free_memory() in (True, False)
    frame = moon_frame.ccd
    expected = tiny_evaluator.evaluate(frame)
    calls = []
    monkeypatch.setattr(_scoring, "release_free_memory", lambda: calls.append(1))
    assert tiny_evaluator.evaluate(frame).patch_scores.tolist() == (expected.patch_scores.tolist())
    assert calls == []  # a small frame: not worth the time
    monkeypatch.setattr(_scoring, "_TRIM_ROWS_PIXELS", 0)
    got = tiny_evaluator.evaluate(frame)
    np.testing.assert_array_equal(got.patch_scores, expected.patch_scores)
    np.testing.assert_array_equal(got.mask, expected.mask)
    scorer = tiny_evaluator._scorer()
    _, _, tasks = scorer.tile_tasks(frame.shape, scorer.workers())
    assert len(calls) == len(tasks)
