# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Normalisation: sky statistics robust to partial contamination, invalid pixels."""

import numpy as np
import pytest

from astro_aeqa._preprocessing import (
    normalize_frame,
    sky_statistics,
    subtract_local_background,
    valid_pixels,
)
from astro_aeqa.exceptions import InputDataError


def test_sky_level_is_the_clear_sky_under_a_partial_cloud(rng):
    data = rng.normal(1000.0, 10.0, (256, 256)).astype(np.float32)
    data[:, :100] += np.linspace(0, 100, 100)  # scattered light over 40 % of the frame
    stats = sky_statistics(data, valid_pixels(data))
    assert stats.level == pytest.approx(1000.0, abs=1.0)
    assert stats.noise == pytest.approx(10.0, rel=0.1)  # the gradient does not inflate it
    # a plain median over all pixels would have been pulled up by the light
    assert np.median(data) > 1003


def test_normalized_frame_is_finite_and_in_noise_units(rng):
    data = rng.normal(500.0, 5.0, (128, 128)).astype(np.float32)
    data[3, 3] = np.nan
    mask = np.zeros(data.shape, bool)
    mask[10, 10] = True
    valid = valid_pixels(data, mask, saturation=510.0)
    x, stats = normalize_frame(data, valid)
    assert np.isfinite(x).all()
    assert x[3, 3] == 0 and x[10, 10] == 0
    assert np.std(x[valid]) == pytest.approx(np.arcsinh(1 / 3), rel=0.1)
    minmax, _ = normalize_frame(data, valid, method="minmax")
    assert minmax[3, 3] == pytest.approx(stats.level)


def test_bad_frames_raise():
    with pytest.raises(InputDataError, match="no valid pixel"):
        sky_statistics(np.ones((32, 32)), np.zeros((32, 32), bool))
    with pytest.raises(InputDataError, match="constant"):
        sky_statistics(np.ones((32, 32)), np.ones((32, 32), bool))
    with pytest.raises(ValueError, match="normalization must be one of"):
        normalize_frame(np.ones((8, 8)), np.ones((8, 8), bool), method="zscale")


def test_fast_asinh_matches_numpy():
    from astro_aeqa._preprocessing import _asinh_inplace

    x = np.concatenate([np.linspace(-5, 5, 1001), np.geomspace(1e-6, 1e6, 200)]).astype(np.float32)
    x = np.concatenate([x, -x])
    np.testing.assert_allclose(_asinh_inplace(x.copy()), np.arcsinh(x), rtol=1e-6, atol=1e-6)


def test_fast_asinh_in_pieces_is_the_same_in_place():
    # a large contiguous array is done in cache-sized pieces, a strided view
    # whole: the same values, written into the array given
    from astro_aeqa._preprocessing import _ASINH_PIECE, _asinh_inplace, _asinh_piece

    x = np.random.default_rng(0).normal(0, 30, (5, _ASINH_PIECE // 2 + 3)).astype(np.float32)
    whole = x.copy()
    _asinh_piece(whole, np.empty_like(whole), np.empty_like(whole))
    big = x.copy()
    assert _asinh_inplace(big) is big
    np.testing.assert_array_equal(big, whole)
    strided = x.copy()
    view = strided[:, ::2]
    _asinh_inplace(view)
    np.testing.assert_array_equal(strided[:, ::2], whole[:, ::2])
    np.testing.assert_array_equal(strided[:, 1::2], x[:, 1::2])


@pytest.mark.parametrize("shape", [(1500, 1300), (600, 277), (4100, 4200)])
def test_sky_statistics_of_frames_whose_blocks_are_not_whole_grid_steps(shape):
    # 1300 // 16 = 81 pixels a block: not a whole number of 2-pixel grid steps
    rng = np.random.default_rng(1)
    data = rng.normal(100.0, 5.0, shape).astype(np.float32)
    stats = sky_statistics(data, np.isfinite(data))
    assert stats.level == pytest.approx(100.0, abs=0.5)
    assert stats.noise == pytest.approx(5.0, rel=0.05)


def test_local_background_scales_a_quiet_sky_up_and_finds_its_edge(rng):
    # A normalised frame whose right half is a bright cloud: the asinh stretch
    # leaves it a tenth of the clear sky's noise, and a step of 5 in level.
    x = rng.normal(0.0, 1 / 3, (128, 128)).astype(np.float32)
    x[:, 64:] = 5.0 + rng.normal(0.0, 1 / 30, (128, 64))
    valid = np.ones(x.shape, bool)
    plain, edges = subtract_local_background(x, valid, 16)
    assert edges is None
    out, edges = subtract_local_background(x, valid, 16, noise=1 / 3)
    clear, cloud = out[:, :40], out[:, 88:]
    np.testing.assert_array_equal(clear, plain[:, :40])  # the clear sky as it was
    assert np.std(plain[:, 88:]) < 0.05
    assert np.std(cloud) == pytest.approx(1 / 3, rel=0.15)  # sky noise again
    assert edges.shape == (8, 8)
    assert edges[:, 3:5].all() and not edges[:, :3].any() and not edges[:, 5:].any()


@pytest.mark.parametrize(
    ("grid_shape", "block", "shape"),
    [
        ((32, 32), 32, (1024, 1024)),
        ((8, 9), 25, (190, 211)),
        ((1, 1), 8, (5, 8)),
        ((3, 40), 4, (9, 157)),
    ],
)
def test_zoomed_bands_sample_as_ndimage_zoom(grid_shape, block, shape):
    # the local background's bilinear zoom: scipy's sampling (grid_mode,
    # nearest beyond the outer block centres) to float32 rounding
    from scipy import ndimage

    from astro_aeqa._preprocessing import _zoomed_bands

    grid = np.random.default_rng(0).normal(size=grid_shape).astype(np.float32)
    zoom = ndimage.zoom(grid, block, order=1, grid_mode=True, mode="nearest")
    expected = zoom[: shape[0], : shape[1]]
    got = np.full(shape, np.nan, np.float32)
    for rows, values in _zoomed_bands(grid, block, shape):
        got[rows] = values
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("rows", "cols"),
    [
        (slice(0, 190), slice(None)),
        (slice(37, 141), slice(5, 200)),
        (range(3, 190, 7), slice(0, 211, 7)),
        (slice(189, 190), slice(210, 211)),
        (slice(50, 50), slice(None)),
    ],
)
def test_bilinear_zoom_windows_are_the_gathered_rows(rows, cols):
    # windows are built a run of rows sharing one grid row at a time: the
    # same values as gathering the grid row of every output row
    from astro_aeqa._preprocessing import _BilinearZoom

    grid = np.random.default_rng(1).normal(size=(8, 9)).astype(np.float32)
    zoom = _BilinearZoom(grid, 25, (190, 211))
    y0 = zoom.y0[rows]
    expected = zoom.step[:, cols][y0] * zoom.fy[rows] + zoom.rows[:, cols][y0]
    got = zoom.window(rows, cols)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("noise", [None, 1 / 3])
def test_local_background_of_a_window_is_that_of_the_whole_frame(rng, noise):
    # the network input of a large frame is made a row of tiles at a time:
    # any window, given its normalised pixels, is what the whole frame gives
    from astro_aeqa._preprocessing import LocalBackground

    x = rng.normal(0.0, 1 / 3, (300, 260)).astype(np.float32)
    x[:, 130:] = 5.0 + rng.normal(0.0, 1 / 30, (300, 130))  # a quiet cloud: gain > 1
    valid = rng.random(x.shape) > 0.02
    whole, edges = subtract_local_background(x, valid, 16, noise=noise)
    step = LocalBackground.sample_step(16)
    background = LocalBackground(
        x[::step, ::step], valid[::step, ::step], 16, noise=noise, shape=x.shape
    )
    if noise is not None:
        assert background._gain is not None
        np.testing.assert_array_equal(background.edges, edges)
    for rows, cols in [
        (slice(0, 300), slice(0, 260)),
        (slice(37, 141), slice(5, 200)),
        (slice(290, 300), slice(250, 260)),
    ]:
        got = background.window(x[rows, cols], valid[rows, cols], rows, cols)
        np.testing.assert_array_equal(got, whole[rows, cols])


def test_a_prepared_frame_makes_its_normalised_pixels_where_they_are_used(
    tiny_evaluator, reference_frames
):
    # the normalised frame is made a window or a sample at a time, never
    # whole while a frame is scored: the same values as the whole frame
    scorer = tiny_evaluator._scorer()
    prepared = scorer.prepare(reference_frames[0])
    assert "x" not in prepared.__dict__
    window = prepared.x_window(slice(10, 100), slice(31, 250))
    sample = prepared.x_sample(2)
    assert "x" not in prepared.__dict__
    whole, _ = normalize_frame(
        prepared.data, prepared.valid, method=prepared.normalization, stats=prepared.stats
    )
    np.testing.assert_array_equal(window, whole[10:100, 31:250])
    np.testing.assert_array_equal(sample, whole[::2, ::2])
    assert prepared.x_sample(2) is sample  # made once
    np.testing.assert_array_equal(prepared.x, whole)  # made whole on demand (training)
