# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_aeqa._masking: thresholds, p-values, morphology, masks and flags."""

import math

import numpy as np
import pytest

from astro_aeqa._masking import (
    build_flag_plane,
    clean_patch_mask,
    combine_masks,
    conformal_threshold,
    patch_mask_to_pixel_mask,
    pvalues,
    robust_threshold,
)
from astro_aeqa.exceptions import AEQAWarning
from astro_aeqa.flags import AEQAFlags, decode_flags


@pytest.mark.parametrize("fpr", [0.001, 0.01, 0.05])
def test_conformal_threshold_controls_false_mask_rate(fpr):
    rng = np.random.default_rng(10)
    reference = rng.uniform(size=10_000)
    fresh = rng.uniform(size=200_000)
    thr = conformal_threshold(reference, fpr)
    rate = np.mean(fresh > thr)
    assert fpr / 2 <= rate <= 2 * fpr


def test_conformal_threshold_rank_and_nonfinite():
    ref = np.r_[np.arange(1.0, 20.0), np.nan, np.inf]  # n = 19 finite
    # ceil(20 * 0.9) = 18th smallest
    assert conformal_threshold(ref, 0.1) == 18.0


def test_conformal_threshold_too_few_references():
    with pytest.warns(AEQAWarning, match="need at least 99"):
        thr = conformal_threshold(np.arange(50.0), 0.01)
    assert thr == math.inf


@pytest.mark.parametrize("fpr", [0, 1, -0.1, 1.5])
def test_conformal_threshold_bad_fpr(fpr):
    with pytest.raises(ValueError, match="fpr"):
        conformal_threshold(np.arange(10.0), fpr)


def test_pvalues_uniform_and_in_range():
    rng = np.random.default_rng(11)
    reference = rng.normal(size=2000)
    scores = rng.normal(size=(50, 40))
    scores[0, 0] = np.nan
    p = pvalues(scores, reference)
    assert p.shape == scores.shape
    assert np.isnan(p[0, 0])
    finite = p[np.isfinite(p)]
    assert finite.min() > 0 and finite.max() <= 1
    hist, _ = np.histogram(finite, bins=10, range=(0, 1))
    assert np.all(np.abs(hist / finite.size - 0.1) < 0.03)
    # consistency with the threshold: p <= fpr  <=>  score > threshold (no ties)
    thr = conformal_threshold(reference, 0.05)
    s = scores[np.isfinite(scores)]
    np.testing.assert_array_equal(pvalues(s, reference) <= 0.05, s > thr)


def test_robust_threshold():
    rng = np.random.default_rng(12)
    s = rng.normal(10.0, 2.0, size=20_000)
    assert robust_threshold(s, k=3.0) == pytest.approx(16.0, abs=0.15)
    s[:100] = 1e6  # outliers do not move it
    assert robust_threshold(np.r_[s, np.nan], k=3.0) == pytest.approx(16.0, abs=0.2)
    with pytest.raises(ValueError, match="finite"):
        robust_threshold([np.nan])


def test_robust_threshold_is_the_median_plus_k_mad():
    rng = np.random.default_rng(3)
    s = np.r_[rng.gamma(2.0, 1.0, 5001), np.nan, np.inf]
    finite = s[np.isfinite(s)]
    mad = np.median(np.abs(finite - np.median(finite)))
    # mad_std is 1.482602... times the MAD: the former 1.4826 to its 5 digits
    spread = robust_threshold(s, k=4.0) - np.median(finite)
    assert spread == pytest.approx(4.0 * 1.4826 * mad, rel=2e-6)
    assert robust_threshold(s, k=0.0) == np.median(finite)


@pytest.mark.parametrize("reconstruct", [True, False])
def test_opening_drops_lone_patch_keeps_edge_block(reconstruct):
    m = np.zeros((8, 10), bool)
    m[0:3, 0:3] = True  # block in the corner
    m[5, 5] = True  # lone bright-star patch
    m[7, 9] = True  # lone patch in the opposite corner
    out = clean_patch_mask(
        m, closing=0, structure="square" if not reconstruct else "cross", reconstruct=reconstruct
    )
    assert not out[5, 5] and not out[7, 9]
    assert out[0:3, 0:3].all()
    assert out.sum() == 9
    assert m.sum() == 11  # input untouched


def test_block_touching_edge_survives_default_cleaning():
    m = np.zeros((6, 9), bool)
    m[3:6, 3:6] = True  # touches the bottom edge
    out = clean_patch_mask(m)
    np.testing.assert_array_equal(out, m)


def test_closing_fills_holes_and_zero_disables():
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    m[3, 3] = False
    out = clean_patch_mask(m, opening=0)
    assert out[3, 3] and out[1:6, 1:6].all() and out.sum() == 25
    np.testing.assert_array_equal(clean_patch_mask(m, opening=0, closing=0), m)
    lone = np.zeros((5, 5), bool)
    lone[2, 2] = True
    np.testing.assert_array_equal(clean_patch_mask(lone, opening=0, closing=0), lone)
    with pytest.raises(ValueError, match="opening"):
        clean_patch_mask(m, opening=-1)
    with pytest.raises(ValueError, match="structure"):
        clean_patch_mask(m, structure="disk")


def test_patch_mask_to_pixel_mask_partial_patches():
    pm = np.array([[True, False, False], [False, False, True]])
    pix = patch_mask_to_pixel_mask(pm, 4, (7, 10))
    assert pix.dtype == bool and pix.shape == (7, 10)
    assert pix[:4, :4].all() and pix[4:, 8:].all()
    assert pix.sum() == 16 + 3 * 2


def test_combine_masks_never_drops_input():
    rng = np.random.default_rng(13)
    old = rng.random((20, 20)) < 0.2
    new = rng.random((20, 20)) < 0.2
    old_copy = old.copy()
    out = combine_masks(old, new)
    assert out[old].all() and out[new].all()
    assert out.sum() == (old | new).sum()
    np.testing.assert_array_equal(old, old_copy)
    assert out is not old and out is not new
    none = combine_masks(None, new)
    np.testing.assert_array_equal(none, new)
    assert none is not new
    with pytest.raises(ValueError, match="shape"):
        combine_masks(old, new[:5])


def test_build_flag_plane():
    shape = (4, 5)
    low = np.zeros(shape, bool)
    low[0] = True
    edge = np.zeros(shape, bool)
    edge[:, 0] = True
    sat = np.zeros(shape, bool)
    sat[3, 4] = True
    flags = build_flag_plane(shape, low_quality=low, edge=edge, saturated=sat)
    assert flags.dtype == np.uint8 and flags.shape == shape  # the narrowest that holds every bit
    np.testing.assert_array_equal(decode_flags(flags, "LOW_QUALITY"), low)
    np.testing.assert_array_equal(decode_flags(flags, "EDGE"), edge)
    np.testing.assert_array_equal(decode_flags(flags, "SATURATED"), sat)
    assert flags[0, 0] == AEQAFlags.LOW_QUALITY | AEQAFlags.EDGE
    assert not decode_flags(flags, "STAR_KEPT").any()
    with pytest.raises(ValueError, match="non_finite"):
        build_flag_plane(shape, non_finite=np.zeros((2, 2), bool))


def test_build_flag_plane_of_views_and_broadcast_planes():
    # planes of any layout (a transposed view, one value broadcast) set their
    # bits where they are True and nowhere else; the inputs are not changed
    rng = np.random.default_rng(0)
    shape = (30, 41)
    low = rng.random(shape) < 0.3
    trail = (rng.random(shape[::-1]) < 0.2).T
    nothing = np.broadcast_to(np.False_, shape)
    everything = np.broadcast_to(np.True_, shape)
    before = low.copy()
    flags = build_flag_plane(
        shape, low_quality=low, trail=trail, saturated=nothing, input_masked=everything
    )
    np.testing.assert_array_equal(decode_flags(flags, "LOW_QUALITY"), low)
    np.testing.assert_array_equal(decode_flags(flags, "TRAIL"), trail)
    assert not decode_flags(flags, "SATURATED").any()
    assert decode_flags(flags, "INPUT_MASKED").all()
    expected = (
        low * int(AEQAFlags.LOW_QUALITY)
        | trail * int(AEQAFlags.TRAIL)
        | int(AEQAFlags.INPUT_MASKED)
    )
    np.testing.assert_array_equal(flags, expected)
    np.testing.assert_array_equal(low, before)


def test_negated_keeps_a_broadcast_plane_a_view():
    from astro_aeqa._masking import negated

    plane = np.random.default_rng(0).random((5, 7)) < 0.5
    np.testing.assert_array_equal(negated(plane), ~plane)
    everywhere = np.broadcast_to(np.True_, (5, 7))
    nowhere = negated(everywhere)
    assert nowhere.shape == (5, 7) and not nowhere.any() and nowhere.strides == (0, 0)


def test_conformal_threshold_too_few_names_the_smallest_supported_fpr():
    import warnings

    from astro_aeqa._masking import conformal_threshold
    from astro_aeqa.exceptions import AEQAWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert conformal_threshold(np.arange(99.0), 0.005) == np.inf
    assert any(
        isinstance(w.message, AEQAWarning) and "fpr >= 0.01, the smallest" in str(w.message)
        for w in caught
    )
    assert np.isfinite(conformal_threshold(np.arange(99.0), 0.01))


def test_flag_plane_takes_broadcast_planes():
    # a plane that is all False (no saturation level, no input mask) is a
    # read-only broadcast view of no memory: it sets no bit
    from astro_aeqa._masking import build_flag_plane
    from astro_aeqa.flags import AEQAFlags

    nothing = np.broadcast_to(np.False_, (3, 4))
    low = np.zeros((3, 4), bool)
    low[1, 2] = True
    flags = build_flag_plane((3, 4), low_quality=low, saturated=nothing, input_masked=nothing)
    expected = np.zeros((3, 4), np.uint8)
    expected[1, 2] = int(AEQAFlags.LOW_QUALITY)
    np.testing.assert_array_equal(flags, expected)
