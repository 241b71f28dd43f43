# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Linear features: find_trails and trail_mask on simulated frames."""

import numpy as np
import pytest
from astropy.utils.exceptions import AstropyUserWarning

from astro_aeqa._preprocessing import sky_statistics
from astro_aeqa._trails import TRAIL_COLUMNS, find_trails, trail_mask
from astro_aeqa.simulation import GWAC_LIKE, PAPER_2P5M, simulate_image

SHAPE = (512, 512)


def to_snr(sim):
    """A simulated frame in units of its sky noise, background removed."""
    data = sim.ccd.data.astype(np.float32)
    valid = np.isfinite(data)
    stats = sky_statistics(data, valid)
    return (data - stats.level) / stats.noise, valid


def add_trail(snr, *, x0, y0, angle, length, fwhm, peak):
    """Add a Gaussian-profile segment of ``peak`` sigma; return its truth pixels.

    Truth is where the simulator puts it: within 1.5 FWHM of the line.
    """
    ny, nx = snr.shape
    yy, xx = np.mgrid[:ny, :nx].astype(np.float32)
    ux, uy = np.cos(angle), np.sin(angle)
    t = (xx - x0) * ux + (yy - y0) * uy
    d = -(xx - x0) * uy + (yy - y0) * ux
    on = (t >= 0) & (t <= length)
    snr += (peak * np.exp(-0.5 * (d / (fwhm / 2.3548)) ** 2) * on).astype(np.float32)
    return (np.abs(d) <= 1.5 * fwhm) & on


@pytest.fixture(scope="module")
def star_field():
    sim = simulate_image(SHAPE, instrument=PAPER_2P5M, seed=11)
    return to_snr(sim)


def rates(mask, truth):
    return mask[truth].mean(), mask[~truth].mean()


@pytest.mark.parametrize(
    ("peak", "fwhm", "length"),
    [
        (2.0, 1.0, 700),  # faint and thin, across the frame
        (2.0, 3.0, 300),
        (2.0, 6.0, 150),
        (5.0, 1.0, 100),
        (5.0, 4.0, 60),  # a short meteor
        (20.0, 2.0, 50),
        (20.0, 6.0, 700),
    ],
)
def test_trail_pixels_masked(star_field, peak, fwhm, length):
    snr, valid = star_field
    snr = snr.copy()
    truth = add_trail(snr, x0=60, y0=90, angle=0.55, length=length, fwhm=fwhm, peak=peak)
    trails = find_trails(snr, valid)
    assert len(trails) == 1
    recall, false_rate = rates(trail_mask(SHAPE, trails), truth)
    assert recall >= 0.95
    assert false_rate <= 0.01
    row = trails[0]
    assert abs(row["theta"] - np.rad2deg(0.55)) < 1.0
    assert row["fwhm"] == pytest.approx(fwhm, rel=0.5, abs=0.7)
    assert row["length"] == pytest.approx(min(length, 600), rel=0.2, abs=10)


def test_faint_peak_one_sigma_long_trail_found(star_field):
    snr, valid = star_field
    snr = snr.copy()
    truth = add_trail(snr, x0=0, y0=400, angle=-0.6, length=800, fwhm=3.0, peak=1.0)
    trails = find_trails(snr, valid)
    assert len(trails) == 1
    recall, false_rate = rates(trail_mask(SHAPE, trails), truth)
    assert recall >= 0.9
    assert false_rate <= 0.01


def test_two_trails():
    # a larger frame: the 1-pixel pad of two frame-long trails alone is ~1 % of 512x512
    shape = (1024, 1024)
    snr, valid = to_snr(simulate_image(shape, instrument=PAPER_2P5M, seed=12))
    t1 = add_trail(snr, x0=20, y0=30, angle=0.2, length=1200, fwhm=2.0, peak=3.0)
    t2 = add_trail(snr, x0=800, y0=10, angle=1.9, length=1200, fwhm=4.0, peak=8.0)
    trails = find_trails(snr, valid)
    assert len(trails) == 2
    recall, false_rate = rates(trail_mask(shape, trails), t1 | t2)
    assert recall >= 0.95
    assert false_rate <= 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_frame_reports_nothing(seed):
    rng = np.random.default_rng(seed)
    assert len(find_trails(rng.normal(size=SHAPE).astype(np.float32))) == 0


@pytest.mark.parametrize("instrument", [PAPER_2P5M, GWAC_LIKE])
def test_star_fields_and_spikes_are_not_trails(instrument):
    for seed in range(3):
        sim = simulate_image(
            SHAPE, instrument=instrument, background="spikes", level=1.0, seed=seed
        )
        assert len(find_trails(*to_snr(sim))) == 0


def test_dense_star_field_is_not_trails():
    sim = simulate_image(SHAPE, instrument=PAPER_2P5M, n_stars=6000, seed=3)
    assert len(find_trails(*to_snr(sim))) == 0


@pytest.mark.parametrize(("peak", "spacing"), [(30.0, 10.0), (100.0, 12.0), (100.0, 14.0)])
def test_a_row_of_stars_is_not_a_trail(star_field, peak, spacing):
    # Four bright stars in a row (as on a crowded plate) blend into one
    # elongated source; the sky between them makes it a chain, not a trail.
    snr, valid = star_field
    snr = snr.copy()
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]].astype(np.float32)
    for k in range(4):
        x, y = 250 + k * spacing * np.cos(0.1), 300 + k * spacing * np.sin(0.1)
        snr += peak * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / 2.5**2)
    assert len(find_trails(snr, valid)) == 0
    # a trail as bright and as long in the same place is found
    add_trail(snr, x0=250, y0=200, angle=0.1, length=45, fwhm=5.0, peak=peak / 2)
    assert len(find_trails(snr, valid)) == 1


def test_a_bright_cloud_is_not_a_trail(monkeypatch):
    # A smooth cloud 25 times the sky from the independent scene generator of
    # the benchmarks: the crease its background leaves in the search's S/N
    # was reported as a 275-pixel trail of peak 0.16 sigma and S/N 784 (the
    # matched filter far above what the across-line profile gives).
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    from _scenes import scene

    from astro_aeqa import AEQualityEvaluator

    ccd, _ = scene("cloud_bright", seed=1, cover=0.5)
    with pytest.warns(AstropyUserWarning, match="calibrate"):  # zero-shot
        res = AEQualityEvaluator.pretrained(device="cpu").evaluate(ccd)
    assert len(res.trails) == 0


def test_bleed_columns_are_not_trails(star_field):
    snr, valid = star_field
    snr = snr.copy()
    valid = valid.copy()
    for x, y, half in ((100, 300, 60), (350, 150, 25), (420, 420, 40)):
        yy, xx = np.mgrid[:512, :512]
        snr += (3000.0 * np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / 2.0**2)).astype(np.float32)
        snr[max(y - half, 0) : y + half, x - 1 : x + 2] = 2000.0  # the bleed, still valid
    assert len(find_trails(snr, valid)) == 0
    # as the evaluator sees them: saturated pixels are invalid
    valid &= snr < 1500
    assert len(find_trails(snr, valid)) == 0


def test_edge_column_is_not_a_trail(star_field):
    snr, valid = star_field
    snr = snr.copy()
    snr[:, 1] += 6.0  # a bad first column, as some detectors read out
    snr[-2, :] += 4.0  # and a bad last row
    assert len(find_trails(snr, valid)) == 0


def test_invalid_pixels(star_field):
    snr, valid = star_field
    snr = snr.copy()
    valid = valid.copy()
    truth = add_trail(snr, x0=0, y0=100, angle=0.4, length=800, fwhm=2.0, peak=4.0)
    snr[200:230] = np.nan  # a band of NaN rows across the trail
    valid[:, 250:270] = False  # masked columns holding garbage
    snr[:, 250:270] = 1e4
    trails = find_trails(snr, valid)
    assert len(trails) >= 1
    mask = trail_mask(SHAPE, trails)
    usable = valid & np.isfinite(snr)
    assert mask[truth & usable].mean() >= 0.95
    assert mask[~truth & usable].mean() <= 0.01
    assert len(find_trails(np.full(SHAPE, np.nan))) == 0
    assert len(find_trails(snr, np.zeros(SHAPE, bool))) == 0


def test_input_is_used_as_it_is_and_not_changed(star_field):
    # A float32 S/N already zero where it is not usable (as the evaluator
    # passes it) is searched without a copy, and neither it nor one that
    # needs cleaning is written to; both give the same trails.
    snr, valid = star_field
    snr, valid = snr.copy(), valid.copy()
    add_trail(snr, x0=0, y0=100, angle=0.4, length=800, fwhm=2.0, peak=4.0)
    valid[:, 250:270] = False
    dirty = snr.copy()
    dirty[~valid] = np.nan
    clean = np.where(valid, snr, 0).astype(np.float32)
    before_dirty, before_clean = dirty.copy(), clean.copy()
    a, b = find_trails(dirty, valid), find_trails(clean, valid)
    assert np.array_equal(dirty, before_dirty, equal_nan=True)
    assert np.array_equal(clean, before_clean)
    assert len(a) == len(b) == 1
    assert a["theta"][0] == b["theta"][0] and a["length"][0] == b["length"][0]


def test_noise_argument_and_table():
    rng = np.random.default_rng(5)
    image = rng.normal(scale=7.0, size=SHAPE).astype(np.float32)
    add_trail(image, x0=10, y0=10, angle=0.8, length=600, fwhm=2.5, peak=21.0)
    trails = find_trails(image, noise=7.0)
    assert tuple(trails.colnames) == TRAIL_COLUMNS
    assert len(trails) == 1
    assert trails["peak"][0] == pytest.approx(3.0, rel=0.3)


def test_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        find_trails(np.zeros(10))
    with pytest.raises(ValueError, match="valid"):
        find_trails(np.zeros((32, 32)), np.ones((16, 16), bool))


def test_trail_mask_width_and_end_points():
    from astropy.table import QTable

    trails = QTable({"x0": [10.0], "y0": [50.0], "x1": [90.0], "y1": [50.0], "fwhm": [2.0]})
    mask = trail_mask((100, 100), trails, width_factor=1.5, pad=1.0)
    half = 1.5 * 2.0 + 1.0
    assert mask[50, 10:91].all()
    assert mask[50 + int(half), 50] and not mask[50 + int(half) + 1, 50]
    assert not mask[50, :8].any() and not mask[50, 93:].any()
    out = np.zeros((100, 100), bool)
    out[0, 0] = True
    assert trail_mask((100, 100), trails, out=out) is out and out[0, 0]


@pytest.fixture(scope="module")
def large_star_field():
    # 1024 x 1024: the line transform runs on the frame binned by 2, where a
    # 50-pixel trail is 25 binned pixels long
    return to_snr(simulate_image((1024, 1024), instrument=PAPER_2P5M, seed=12))


@pytest.mark.parametrize(
    ("x0", "y0", "angle", "fwhm"),
    [
        (122, 703, 1.69, 1.0),
        (263, 310, 2.36, 1.0),
        (869, 680, 1.70, 6.0),
    ],
)
def test_short_faint_trail_found(large_star_field, x0, y0, angle, fwhm):
    # peak 2 sigma, 50 pixels: a matched-filter S/N of 12-30, found by the
    # short-segment search
    snr, valid = large_star_field
    snr = snr.copy()
    truth = add_trail(snr, x0=x0, y0=y0, angle=angle, length=50, fwhm=fwhm, peak=2.0)
    trails = find_trails(snr, valid)
    assert len(trails) == 1
    recall, false_rate = rates(trail_mask(snr.shape, trails), truth)
    assert recall >= 0.95
    assert false_rate <= 0.001
    assert trails["length"][0] == pytest.approx(50, abs=12)


def test_meteor_head_masked(star_field):
    # a meteor: a thin tail and a bright, wider head whose core is saturated
    # (invalid, as the evaluator passes saturated pixels)
    snr, valid = star_field
    snr = snr.copy()
    yy, xx = np.mgrid[:512, :512].astype(np.float32)
    x0, y0, angle, length = 80.0, 300.0, -0.15, 260.0
    ux, uy = np.cos(angle), np.sin(angle)
    t = (xx - x0) * ux + (yy - y0) * uy
    d = -(xx - x0) * uy + (yy - y0) * ux
    tail = (t >= 0) & (t <= length)
    head = (t > length) & (t <= length + 50)
    snr += (6.0 * np.exp(-0.5 * (d / (2.0 / 2.3548)) ** 2) * tail).astype(np.float32)
    snr += (
        2000.0
        * np.exp(-0.5 * (d / (5.0 / 2.3548)) ** 2)
        * np.exp(-0.5 * ((t - length - 25) / 15) ** 2)
        * head
    ).astype(np.float32)
    usable = valid & (snr < 500)
    trails = find_trails(np.where(usable, snr, 0), usable)
    assert "head" in list(trails["method"])
    mask = trail_mask(SHAPE, trails)
    head_pixels = head & (np.abs(d) <= 4)
    tail_pixels = tail & (np.abs(d) <= 3)
    assert mask[head_pixels].mean() >= 0.95
    assert mask[tail_pixels].mean() >= 0.95
    assert mask[~(head_pixels | tail_pixels)].mean() <= 0.01


def test_valid_at_rounds_as_map_coordinates():
    # the trail refinement looks up valid pixels by index, as scipy's
    # nearest-neighbour sampling does (halves round up, the edge beyond it)
    from scipy import ndimage

    from astro_aeqa._trails import _valid_at

    rng = np.random.default_rng(0)
    valid = rng.random((40, 50)) > 0.5
    ys = np.concatenate([rng.uniform(-3, 43, 2000), np.arange(-2, 42, 0.5)])
    xs = np.concatenate([rng.uniform(-3, 53, 2000), np.arange(-2, 42, 0.5)])
    coords = np.array([ys, xs])
    expected = ndimage.map_coordinates(valid, coords, order=0, mode="nearest").astype(bool)
    np.testing.assert_array_equal(_valid_at(valid, coords), expected)


def test_valid_at_of_a_view_is_that_of_a_copy():
    # the look-up takes flat indices of a C-ordered plane, 2-D ones of a view
    from astro_aeqa._trails import _valid_at

    rng = np.random.default_rng(1)
    valid = rng.random((60, 80)) > 0.5
    coords = np.array([rng.uniform(-2, 40, 500), rng.uniform(-2, 62, 500)])
    view = valid[::2, 7:70].T
    np.testing.assert_array_equal(_valid_at(view, coords), _valid_at(view.copy(), coords))


@pytest.mark.parametrize("grid_shape", [(1, 1), (1, 6), (5, 1), (7, 9)])
def test_upsample_is_the_grid_interpolated_everywhere(grid_shape):
    # the background grid is upsampled rows then columns: the values of the
    # bilinear interpolation at every pixel, bit for bit
    from astro_aeqa._trails import _interp_grid, _upsample

    grid = np.random.default_rng(2).normal(size=grid_shape)
    shape, cell = (53, 71), (9.5, 8.0)
    yy = (np.arange(shape[0]) + 0.5) / cell[0] - 0.5
    xx = (np.arange(shape[1]) + 0.5) / cell[1] - 0.5
    expected = _interp_grid(grid, yy[:, None], xx[None, :])
    np.testing.assert_array_equal(_upsample(grid, cell, shape), expected)


def test_line_counts_of_all_valid_frames_are_reused():
    from astro_aeqa._trails import _count_lines, _line_counts

    theta = np.linspace(0, np.pi, 90, endpoint=False)
    args = (np.cos(theta), np.sin(theta), 90, 45.0, 31.5, 23.5)
    good = np.ones((48, 64), bool)
    first = _line_counts(good, *args)
    assert _line_counts(good.copy(), *args) is first  # the same geometry: reused
    np.testing.assert_array_equal(first, _count_lines(good, *args))
    holes = good.copy()
    holes[10:20, 5:30] = False  # not all valid: counted again
    np.testing.assert_array_equal(_line_counts(holes, *args), _count_lines(holes, *args))
    assert not np.array_equal(_line_counts(holes, *args), first)


def test_scaled_snr_interpolates_window_by_window_as_the_whole_array():
    # the S/N of a large frame is never made whole: interpolated on windows
    # around runs of points, it gives map_coordinates' values of the array
    from scipy import ndimage

    from astro_aeqa._trails import ScaledSNR, _interpolated

    rng = np.random.default_rng(1)
    data = rng.normal(100.0, 5.0, (300, 400)).astype(np.float32)
    data[50:60, 70:90] = np.nan
    valid = np.isfinite(data) & (rng.random(data.shape) > 0.05)
    lazy = ScaledSNR(data, valid, 100.0, 5.0)
    whole = lazy[:, :]
    assert whole.dtype == np.float32 and not whole[~valid].any()
    np.testing.assert_array_equal(whole, np.where(valid, (data - 100) / np.float32(5), 0))
    t = np.linspace(-20, 520, 9000)  # a line across the frame and beyond its edges
    ds = np.arange(-6, 6.5, 0.5)
    ys = (0.6 * t[:, None] - 30 + ds[None, :] * 0.8).ravel()
    xs = (0.8 * t[:, None] + 10 - ds[None, :] * 0.6).ravel()
    coords = np.array([ys, xs])
    expected = ndimage.map_coordinates(whole, coords, order=1, mode="nearest")
    np.testing.assert_array_equal(_interpolated(lazy, valid, coords), expected)


def test_summed_snr_keeps_the_valid_plane_unless_a_value_overflows():
    # the usable pixels are the valid ones (no plane of their own) until a
    # valid pixel's S/N is not finite; the valid plane is never changed
    from astro_aeqa._trails import ScaledSNR, _block_sums, _summed_snr

    rng = np.random.default_rng(3)
    data = rng.normal(100.0, 5.0, (96, 64)).astype(np.float32)
    valid = rng.random(data.shape) > 0.05
    good, sums = _summed_snr(ScaledSNR(data, valid, 100.0, 5.0), [4, 8])
    assert good is valid
    data[70, 9] = 3e38  # finite, but not once the level is taken off and divided by 1e-3
    before = valid.copy()
    lazy = ScaledSNR(data, valid, 100.0, 1e-3)
    good, sums = _summed_snr(lazy, [4, 8])
    np.testing.assert_array_equal(valid, before)
    assert valid[70, 9] and not good[70, 9]
    np.testing.assert_array_equal(good, valid & np.isfinite(lazy[:, :]))
    snr = np.where(good, lazy[:, :], 0)
    for b in (4, 8):
        total, count, _ = sums[b]
        np.testing.assert_array_equal(total, _block_sums(snr, b))
        np.testing.assert_array_equal(count, _block_sums(good, b))


def test_find_trails_on_a_scaled_snr_finds_the_same_trails():
    # a large frame's S/N summed band by band and sampled on windows: the
    # same trails as the S/N array, on frames whose two binnings divide each
    # other (4096) and do not (2100 x 2500)
    from astro_aeqa._trails import ScaledSNR

    for shape, seed in (((2100, 2500), 12), ((4096, 4096), 10)):
        sim = simulate_image(shape, background="trail", seed=seed)
        data = sim.ccd.data.astype(np.float32)
        valid = np.isfinite(data)
        valid[:40, :] = False  # an unusable strip
        stats = sky_statistics(data, valid)
        snr = np.subtract(data, np.float32(stats.level), dtype=np.float32)
        snr /= np.float32(stats.noise)
        snr[~valid] = 0.0
        expected = find_trails(snr, valid)
        got = find_trails(ScaledSNR(data, valid, stats.level, stats.noise))
        assert len(expected) >= 1
        assert got.colnames == expected.colnames
        for name in expected.colnames:
            np.testing.assert_array_equal(got[name], expected[name])


def test_faint_trail_along_a_long_thin_frame_found():
    # 3000 rows along the line: a faint trail the length of a large frame
    rng = np.random.default_rng(5)
    snr = rng.normal(size=(3000, 160)).astype(np.float32)
    truth = add_trail(
        snr, x0=70.0, y0=-10.0, angle=np.deg2rad(89.0), length=3100, fwhm=3.0, peak=1.0
    )
    trails = find_trails(snr, np.ones(snr.shape, bool))
    assert len(trails) == 1
    assert trails["theta"][0] == pytest.approx(89.0, abs=0.3)
    recall, false_rate = rates(trail_mask(snr.shape, trails), truth)
    assert recall > 0.95
    assert false_rate < 0.03  # the mask is a little wider than the truth band


def test_kadane_rows_find_the_run_of_largest_sum_of_each_row():
    from astro_aeqa._trails import _kadane, _kadane_rows

    # small integers: sums are exact, so the best run is checked against
    # every run of the row (an empty run, sum 0, where all are negative)
    rng = np.random.default_rng(3)
    v = rng.integers(-4, 4, (40, 60)).astype(float)
    v[0] = -1.0
    i, j = _kadane_rows(v)
    for row, a, b in zip(v, i, j, strict=True):
        c = np.concatenate(([0.0], np.cumsum(row)))
        best = max(c[q] - c[p] for p in range(c.size) for q in range(p, c.size))
        assert 0 <= a <= b <= row.size
        assert row[a:b].sum() == best
        assert _kadane(row) == (a, b)
    assert (i[0], j[0]) == (0, 0)
