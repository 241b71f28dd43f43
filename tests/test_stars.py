# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""find_stars on frames with nothing to find, and its cuts."""

import numpy as np
import pytest

from astro_aeqa import _stars
from astro_aeqa._preprocessing import sky_statistics
from astro_aeqa._stars import find_stars


def _stats():
    """The sky statistics of a noise frame: level about 100, noise about 1."""
    flat = np.full((64, 64), 100.0, np.float32)
    flat += np.random.default_rng(0).normal(0.0, 1.0, flat.shape).astype(np.float32)
    return sky_statistics(flat, np.ones(flat.shape, bool))


@pytest.mark.parametrize("kind", ["flat", "tiny"])
def test_find_stars_finds_nothing_without_a_warning(kind):
    # pytest turns warnings into errors: photutils' NoDetectionsWarning would fail here
    data = np.full((64, 64), 100.0, np.float32)
    if kind == "tiny":
        data[10, 10] = data[30, 31] = data[30, 32] = 200.0  # segments smaller than n_pixels
    found = find_stars(data, stats=_stats(), min_peak=20.0)
    assert len(found) == 0
    assert found.colnames == ["x", "y", "peak_snr", "fwhm", "elongation", "star"]
    assert np.isnan(found.meta["fwhm"])


def test_find_stars_cuts_small_segments_and_faint_peaks():
    stats = _stats()
    data = np.full((80, 80), float(stats.level), np.float32)
    yy, xx = np.mgrid[:80, :80]
    for x, y, peak in ((20.0, 20.0, 100.0), (60.0, 20.0, 12.0), (40.0, 60.0, 400.0)):
        data += (
            peak * stats.noise * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
        ).astype(np.float32)
    data[5, 70] = stats.level + 50 * stats.noise  # a hot pixel: one pixel, not a source
    every = find_stars(data, stats=stats)
    assert len(every) == 3
    np.testing.assert_allclose(np.sort(every["x"]), [20.0, 40.0, 60.0], atol=0.05)
    bright = find_stars(data, stats=stats, min_peak=50.0)
    np.testing.assert_allclose(np.sort(bright["peak_snr"]), np.sort(every["peak_snr"])[1:])
    assert find_stars(data, stats=stats, min_peak=1000.0).colnames == every.colnames
    # round Gaussians of FWHM 2.355 * 1.5 px: round and, from the bright ones, the FWHM
    assert (every["elongation"] < 1.05).all()
    assert every.meta["fwhm"] == pytest.approx(2.355 * 1.5, rel=0.1)


def test_find_stars_counts_non_finite_pixels_as_sky(monkeypatch):
    # NaN, +inf and -inf pixels have S/N 0: a frame with them finds what the
    # same frame with the sky level there finds (the seeds of the windows
    # are taken from the data's peaks, which such pixels would fool)
    stats = _stats()
    rng = np.random.default_rng(1)
    shape = (320, 400)
    data = rng.normal(float(stats.level), float(stats.noise), shape).astype(np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(12):
        x, y, peak = rng.uniform(5, 395), rng.uniform(5, 315), rng.uniform(8, 300)
        data += (
            peak * stats.noise * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
        ).astype(np.float32)
    data[:40, :60] = float(stats.level) - 20 * stats.noise  # a region below the sky
    holes = data.copy()
    for value in (np.nan, np.inf, -np.inf):
        iy, ix = rng.integers(0, shape[0], 20), rng.integers(0, shape[1], 20)
        holes[iy, ix] = value
        data[iy, ix] = stats.level
    holes[:40, :60][::7, ::5] = -np.inf  # -inf beside pixels below the sky
    data[:40, :60][::7, ::5] = stats.level
    # the same windows are segmented, too
    windows = []
    measure = _stars._measure_windows

    def record(snr, shape, wins, *args):
        windows.append(list(map(tuple, wins)))
        return measure(snr, shape, wins, *args)

    monkeypatch.setattr(_stars, "_measure_windows", record)
    for min_peak in (None, 10.0, 30.0):
        expected = find_stars(data, stats=stats, min_peak=min_peak)
        found = find_stars(holes, stats=stats, min_peak=min_peak)
        assert len(found) == len(expected) > 0
        for name in expected.colnames:
            np.testing.assert_array_equal(found[name], expected[name])
        assert windows[1::2] == windows[0::2]
        windows.clear()


def test_large_windows_are_labelled_in_strips_with_the_same_sources(monkeypatch):
    # a crowded field merges its windows into one larger than a canvas: it is
    # labelled strip by strip, with the catalogue of the whole window
    stats = _stats()
    rng = np.random.default_rng(2)
    shape = (300, 260)
    data = rng.normal(float(stats.level), float(stats.noise), shape).astype(np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(250):
        x, y = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
        peak, sigma = rng.uniform(4, 400), rng.uniform(0.8, 3.0)
        data += (
            peak * stats.noise * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
        ).astype(np.float32)
    # a streak alone, whose pixels touch only diagonally across the strip
    # boundary between rows 6 and 7
    data[:16, 96:124] = stats.level
    data[np.arange(3, 11), np.arange(104, 112)] = stats.level + 60 * stats.noise
    strips = []
    label_in_strips = _stars._label_in_strips

    def spy(*args):
        strips.append(args[2])
        return label_in_strips(*args)

    monkeypatch.setattr(_stars, "_label_in_strips", spy)
    for min_peak in (None, 10.0):
        monkeypatch.setattr(_stars, "_CANVAS_PIXELS", 2**22)
        whole = find_stars(data, stats=stats, min_peak=min_peak)
        assert not strips
        monkeypatch.setattr(_stars, "_CANVAS_PIXELS", 2000)  # strips of 7 rows
        found = find_stars(data, stats=stats, min_peak=min_peak)
        assert strips, "no window was labelled in strips"
        strips.clear()
        assert len(found) == len(whole) > 50
        for name in whole.colnames:
            np.testing.assert_array_equal(found[name], whole[name])


def test_a_sky_far_above_the_level_is_no_source():
    # a frame judged against a sky level far below its own (a bright Moon
    # against the camera's clear sky) is one segment: left out before its
    # pixels are gathered, without gigabytes of moments
    import tracemalloc

    from astro_aeqa._preprocessing import SkyStatistics

    rng = np.random.default_rng(3)
    data = rng.normal(1000.0, 10.0, (2048, 2048)).astype(np.float32)
    tracemalloc.start()
    try:
        found = find_stars(data, stats=SkyStatistics(level=0.0, noise=10.0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(found) == 0
    assert peak < 8 * data.nbytes  # 25x before: ~100 bytes a labelled pixel


def test_a_giant_segment_across_strips_is_left_out_whole(monkeypatch):
    # a window larger than a canvas is labelled in strips: a giant in one
    # strip takes the part of it in the next strip with it, and the stars
    # beside it are still found
    monkeypatch.setattr(_stars, "_MAX_SOURCE_PIXELS", 20_000)
    monkeypatch.setattr(_stars, "_CANVAS_PIXELS", 2**16)
    rng = np.random.default_rng(4)
    data = rng.normal(0.0, 1.0, (600, 600)).astype(np.float32)
    data[:300, :200] += 50.0  # 60,000 pixels: a giant, over several strips
    yy, xx = np.mgrid[:600, :600]
    stars = [(450.0, 500.0), (100.0, 400.0), (520.0, 120.0)]
    for x, y in stars:
        data += 200.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    from astro_aeqa._preprocessing import SkyStatistics

    found = find_stars(data, stats=SkyStatistics(level=0.0, noise=1.0), min_peak=10)
    xs, ys = np.round(found["x"]).astype(int), np.round(found["y"]).astype(int)
    got = sorted(zip(xs, ys, strict=True))
    assert got == sorted((int(x), int(y)) for x, y in stars)


@pytest.mark.parametrize("shape", [(32, 48), (37, 50), (5, 3)])
def test_block_max_is_the_maximum_of_each_block(shape):
    from astro_aeqa._stars import _block_max

    image = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    image[1, 2] = np.nan  # a NaN block stays NaN, as np.max gives it
    block = 16
    expected = np.array(
        [
            [np.max(image[y : y + block, x : x + block]) for x in range(0, shape[1], block)]
            for y in range(0, shape[0], block)
        ]
    )
    np.testing.assert_array_equal(_block_max(image, block), expected)
