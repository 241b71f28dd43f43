# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_aeqa._tiling: tile coverage, seamless stitching, patch statistics."""

import numpy as np
import pytest

from astro_aeqa._tiling import (
    aggregate_patches,
    extract_tiles,
    iter_tile_batches,
    owned_regions,
    patch_grid_shape,
    patches_to_pixels,
    stitch_tiles,
    tile_origins,
)
from astro_aeqa.exceptions import InputDataError


@pytest.mark.parametrize(
    ("shape", "tile", "overlap"),
    [((300, 517), 128, 16), ((128, 128), 128, 16), ((129, 255), 64, 8), ((70, 97), 32, 0)],
)
def test_tile_origins_cover_every_pixel(shape, tile, overlap):
    origins = tile_origins(shape, tile, overlap)
    assert origins.dtype.kind == "i"
    cover = np.zeros(shape, int)
    for y0, x0 in origins:
        assert 0 <= y0 <= shape[0] - tile and 0 <= x0 <= shape[1] - tile
        cover[y0 : y0 + tile, x0 : x0 + tile] += 1
    assert cover.min() >= 1
    # regular step except the clamped last row/column
    ys = np.unique(origins[:, 0])
    assert ys[0] == 0 and ys[-1] == shape[0] - tile
    if len(ys) > 2:
        assert set(np.diff(ys[:-1])) == {tile - 2 * overlap}


def test_tile_origins_errors():
    with pytest.raises(InputDataError, match="40x60 pixels is smaller than one tile of 64x64"):
        tile_origins((40, 60), 64, 8)
    with pytest.raises(ValueError, match="overlap"):
        tile_origins((100, 100), 16, 8)


@pytest.mark.parametrize("shape", [(300, 517), (128, 200), (97, 97)])
def test_stitch_identity_random_and_smooth(shape):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for image in (rng.normal(size=shape).astype(np.float32), np.sin(yy / 17.0) * np.cos(xx / 23.0)):
        origins = tile_origins(shape, 64, 8)
        tiles = extract_tiles(image, origins, 64)
        assert tiles.dtype == np.float32
        out = stitch_tiles(tiles, origins, shape, 8)
        np.testing.assert_array_equal(out, image.astype(np.float32))


def test_stitch_no_seams_with_edge_effects():
    # A "network" that corrupts the outer `overlap` pixels of every tile: the
    # corruption must never reach the stitched image away from the frame edge.
    shape, tile, overlap = (300, 517), 64, 8
    rng = np.random.default_rng(2)
    image = rng.normal(size=shape).astype(np.float32)
    origins = tile_origins(shape, tile, overlap)
    tiles = extract_tiles(image, origins, tile)
    band = np.ones((tile, tile), bool)
    band[overlap:-overlap, overlap:-overlap] = False
    tiles[:, band] += 1000.0
    out = stitch_tiles(tiles, origins, shape, overlap)
    inner = (slice(overlap, -overlap), slice(overlap, -overlap))
    np.testing.assert_array_equal(out[inner], image[inner])
    # border tiles keep their border pixels (the corrupted band at the frame edge)
    assert np.all(out[0] > 500) and np.all(out[:, -1] > 500)
    # a position-dependent function (tile-local ramp) leaves only the centre of tiles
    ramp = np.add.outer(np.arange(tile), np.arange(tile)).astype(np.float32)
    tiles2 = extract_tiles(image, origins, tile) * 0 + ramp
    out2 = stitch_tiles(tiles2, origins, shape, overlap)
    assert out2[inner].min() >= 2 * overlap and out2[inner].max() <= 2 * (tile - 1 - overlap)


def test_stitch_input_errors():
    with pytest.raises(ValueError, match="n_tiles"):
        stitch_tiles(np.zeros((2, 4, 4)), [[0, 0]], (4, 4))


def test_iter_tile_batches_matches_all_tiles():
    image = np.arange(200 * 150, dtype=float).reshape(200, 150)
    origins = tile_origins(image.shape, 64, 8)
    all_tiles = extract_tiles(image, origins, 64)
    batches = list(iter_tile_batches(image, 64, 8, 4))
    assert all(len(o) <= 4 for o, _ in batches)
    np.testing.assert_array_equal(np.concatenate([o for o, _ in batches]), origins)
    np.testing.assert_array_equal(np.concatenate([t for _, t in batches]), all_tiles)


def test_patch_grid_and_expansion():
    assert patch_grid_shape((300, 517), 64) == (5, 9)
    assert patch_grid_shape((128, 128), 64) == (2, 2)
    vals = np.arange(45).reshape(5, 9)
    pix = patches_to_pixels(vals, 64, (300, 517))
    assert pix.shape == (300, 517)
    assert pix[299, 516] == 44 and pix[63, 63] == 0 and pix[64, 64] == 10
    with pytest.raises(ValueError, match="patch-grid shape"):
        patches_to_pixels(vals[:4], 64, (300, 517))


def _loop_reference(values, weights, p, func):
    n_py, n_px = patch_grid_shape(values.shape, p)
    out = np.full((n_py, n_px), np.nan)
    count = np.zeros((n_py, n_px), int)
    for i in range(n_py):
        for j in range(n_px):
            v = values[i * p : (i + 1) * p, j * p : (j + 1) * p]
            w = weights[i * p : (i + 1) * p, j * p : (j + 1) * p]
            good = np.isfinite(v) & (w > 0)
            count[i, j] = good.sum()
            if good.any():
                out[i, j] = func(v[good], w[good])
    return out, count


def _trimmed(v, w, trim=0.1):
    v = np.sort(v)
    return v[: len(v) - int(np.floor(trim * len(v)))].mean()


@pytest.mark.parametrize(
    ("statistic", "kwargs", "func"),
    [
        ("mean", {}, lambda v, w: v.mean()),
        ("median", {}, lambda v, w: np.median(v)),
        ("quantile", {"q": 0.9}, lambda v, w: np.quantile(v, 0.9)),
        ("trimmed_mean", {}, _trimmed),
        ("trimmed_mean", {"trim": 0.3}, lambda v, w: _trimmed(v, w, 0.3)),
    ],
)
def test_aggregate_matches_loop_reference(statistic, kwargs, func):
    rng = np.random.default_rng(3)
    values = rng.exponential(size=(23, 31))
    values[rng.random(values.shape) < 0.1] = np.nan
    values[0:5, 0:5] = np.nan  # a patch with no valid pixel
    weights = rng.random(values.shape) > 0.2
    weights[5:10, 5:10] = False  # another one, excluded by weights
    scores, n_valid = aggregate_patches(values, 5, weights=weights, statistic=statistic, **kwargs)
    ref, count = _loop_reference(values, weights.astype(float), 5, func)
    assert scores.shape == (5, 7)
    np.testing.assert_array_equal(n_valid, count)
    np.testing.assert_allclose(scores, ref, rtol=1e-12)
    assert np.isnan(scores[0, 0]) and n_valid[0, 0] == 0
    assert np.isnan(scores[1, 1]) and n_valid[1, 1] == 0
    # only some patches (partial ones at the edges among them): the same values
    chosen = rng.random(scores.shape) < 0.5
    chosen[-1, -1] = True
    picked, n_picked = aggregate_patches(
        values, 5, weights=weights, statistic=statistic, patches=chosen, **kwargs
    )
    np.testing.assert_array_equal(n_picked, count)
    np.testing.assert_allclose(picked[chosen], ref[chosen], rtol=1e-12)
    assert np.isnan(picked[~chosen]).all()


def test_aggregate_float_weights_and_robustness():
    values = np.ones((8, 8))
    weights = np.ones((8, 8))
    values[0, 0] = 5.0
    weights[0, 0] = 3.0
    scores, _ = aggregate_patches(values, 4, weights=weights)
    assert scores[0, 0] == pytest.approx((15 + 15) / 18)
    picked, _ = aggregate_patches(
        values, 4, weights=weights, patches=[[True, False], [False, True]]
    )
    assert picked[0, 0] == pytest.approx(scores[0, 0]) and picked[1, 1] == 1.0
    assert np.isnan(picked[0, 1]) and np.isnan(picked[1, 0])
    # a few bright-star pixels dominate the mean, not the trimmed mean
    values = np.full((16, 16), 1.0)
    values[:2, :2] = 1000.0
    mean, _ = aggregate_patches(values, 16)
    trimmed, _ = aggregate_patches(values, 16, statistic="trimmed_mean")
    assert mean[0, 0] > 10 and trimmed[0, 0] == 1.0


def test_aggregate_errors():
    with pytest.raises(ValueError, match="statistic"):
        aggregate_patches(np.zeros((4, 4)), 2, statistic="max")
    with pytest.raises(ValueError, match="weights"):
        aggregate_patches(np.zeros((4, 4)), 2, weights=np.ones((3, 3)))
    with pytest.raises(ValueError, match="2-D"):
        aggregate_patches(np.zeros(4), 2)
    with pytest.raises(ValueError, match="patch-grid shape"):
        aggregate_patches(np.zeros((4, 4)), 2, patches=np.ones((3, 2), bool))


def test_aggregate_float32_input_matches_float64():
    rng = np.random.default_rng(4)
    values = rng.exponential(size=(40, 50)).astype(np.float32)
    weights = rng.random(values.shape) > 0.3
    for statistic in ("mean", "median", "trimmed_mean"):
        s32, n32 = aggregate_patches(values, 8, weights=weights, statistic=statistic)
        s64, n64 = aggregate_patches(
            values.astype(np.float64), 8, weights=weights, statistic=statistic
        )
        assert s32.dtype == np.float64
        np.testing.assert_array_equal(n32, n64)
        np.testing.assert_allclose(s32, s64, rtol=1e-6)


@pytest.mark.parametrize("statistic, q", [("median", 0.5), ("quantile", 0.9), ("quantile", 0.0)])
def test_fast_patch_quantiles_match_numpy_nanquantile(statistic, q):
    rng = np.random.default_rng(3)
    values = rng.normal(size=(96, 80)).astype(np.float32)
    values[rng.random(values.shape) < 0.02] = np.nan
    values[:16, :16] = np.nan  # a patch with no valid pixel
    scores, _ = aggregate_patches(values, 16, statistic=statistic, q=q)
    blocks = values.reshape(6, 16, 5, 16).transpose(0, 2, 1, 3).reshape(6, 5, -1)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanquantile(blocks, q, axis=-1)
    assert np.isnan(scores[0, 0]) and np.isnan(expected[0, 0])
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n", [1, 2, 3, 16, 255, 256])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_rows_is_numpys_quantile_bit_for_bit(n, dtype):
    from astro_aeqa._tiling import _median_rows

    rng = np.random.default_rng(n)
    rows = rng.normal(size=(300, n)).astype(dtype)
    rows[::5] = np.round(rows[::5] * 2)  # ties
    rows[::7] *= 1e30
    np.testing.assert_array_equal(_median_rows(rows), np.quantile(rows, 0.5, axis=1))
    rows[3, 0] = np.inf  # NumPy's medians of rows with inf are NaN: kept
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(_median_rows(rows), np.quantile(rows, 0.5, axis=1))


def _brute_ownership(starts, n, tile_size):
    """The tiles x pixels ownership of before issue 17: the reference."""
    pix = np.arange(n)[None, :]
    s = np.asarray(starts)[:, None]
    inside = (pix >= s) & (pix < s + tile_size)
    big = np.iinfo(np.intp).max // 2
    left = np.where(s > 0, pix - s, big)
    right = np.where(s + tile_size < n, s + tile_size - 1 - pix, big)
    owner = np.argmax(np.where(inside, np.minimum(left, right), -1), axis=0)
    k = np.arange(len(starts))
    return np.searchsorted(owner, k, side="left"), np.searchsorted(owner, k, side="right")


@pytest.mark.parametrize("seed", range(20))
def test_linear_ownership_equals_the_tiles_by_pixels_reference(seed):
    from astro_aeqa._tiling import _ownership

    rng = np.random.default_rng(seed)
    tile = int(rng.integers(2, 40))
    n = int(rng.integers(tile, 400))
    step = int(rng.integers(1, tile + 1))
    starts = list(range(0, n - tile + 1, step))
    if starts[-1] != n - tile:
        starts.append(n - tile)
    starts = np.asarray(starts)
    for got, want in zip(
        _ownership(starts, n, tile), _brute_ownership(starts, n, tile), strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_thin_strip_tiles_step_half_a_tile_and_ownership_is_linear():
    """Issue 17: 64x20000 gave 9969 tiles (step 2) and tiles x pixels arrays (6.7 GB)."""
    import tracemalloc

    shape, tile = (64, 200_000), 64
    origins = tile_origins(shape, tile, 31)  # the evaluator's overlap on a 64-px side
    steps = np.diff(np.unique(origins[:, 1]))
    assert steps.min() >= tile // 2 - 1 and len(origins) < 2 * shape[1] / tile + 2
    tracemalloc.start()
    try:
        regions = owned_regions(origins, shape, tile)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * shape[1]  # bytes: a few arrays of the long side, not tiles x pixels
    area = (regions[:, 1] - regions[:, 0]) * (regions[:, 3] - regions[:, 2])
    assert area.sum() == shape[0] * shape[1]
    image = np.random.default_rng(0).standard_normal((64, 3000)).astype(np.float32)
    origins = tile_origins(image.shape, tile, 31)
    tiles = extract_tiles(image, origins, tile)
    np.testing.assert_array_equal(stitch_tiles(tiles, origins, image.shape), image)


def test_overlap_above_a_quarter_tile_is_reduced():
    assert np.array_equal(tile_origins((8, 40), 8, 3), tile_origins((8, 40), 8, 2))
    with pytest.raises(ValueError, match="2 \\* overlap must be smaller"):
        tile_origins((8, 40), 8, 4)
