# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Pinned scores and masks of a few fixed frames.

A change of these numbers changes what users get: make it deliberately,
and say why in CHANGES. The frames are simulated with fixed seeds; the
model is the pretrained one, zero-shot and calibrated on four clean frames
of a synthetic camera (the camera-reference, transparency and footprint
paths). Scores are compared to 1e-5 (the forward pass may round
differently on another CPU); mask sizes exactly.
"""

import numpy as np
import pytest
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning
from scipy import ndimage

from astro_aeqa import AEQualityEvaluator
from astro_aeqa.simulation import simulate_image

RTOL = 1e-5


def _camera_frame(seed, *, cloud=None, shape=(256, 256), sky=400.0):
    """Stars on a Poisson sky; ``cloud='dim'`` dims the top 80 % by 2.5 mag."""
    rng = np.random.default_rng(seed)
    stars = np.zeros(shape, np.float32)
    n = shape[0] * shape[1] // 400
    np.add.at(
        stars,
        (rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)),
        3e4 * 10 ** (-0.4 * rng.uniform(0, 6, n)),
    )
    stars = ndimage.gaussian_filter(stars, 1.3)
    transmission = np.ones(shape)
    if cloud == "dim":
        transmission[int(0.2 * shape[0]) :, :] = 10 ** (-0.4 * 2.5)
    signal = (stars + sky) * transmission
    data = rng.normal(signal, np.sqrt(signal + 36)).astype(np.float32)
    return CCDData(data, unit="electron", meta={"EXPTIME": 30.0})


@pytest.fixture(scope="module")
def zero_shot():
    return AEQualityEvaluator.pretrained(device="cpu", precision="float32")


@pytest.fixture(scope="module")
def calibrated():
    ev = AEQualityEvaluator.pretrained(device="cpu", precision="float32")
    ev.calibrate([_camera_frame(s) for s in (1, 2, 5, 6)], progress_bar=False)
    return ev


# (frame, score, first patch scores, threshold, method, masked pixels)
ZERO_SHOT = {
    "clean": (
        0.20393304935442239,
        [0.19665021705788496, 0.2054184696486897, 0.1871975448681231, 0.2054659151693173],
        0.3086915174747962,
        "fpr",
        0,
    ),
    "trail": (
        0.22355480366399694,
        [0.19351320984491188, 0.19799322090514565, 0.19459007707140796, 0.22059306927259728],
        0.3086915174747962,
        "fpr",
        11377,
    ),
}
CALIBRATED = {
    "clean": (
        0.18450622080004947,
        [0.18593388927220703, 0.1870267075741097, 0.1870267075741097, 0.1912825896077037],
        0.2753663421595232,
        "fpr",
        0,
    ),
    "dim": (  # the first patch row, mostly clear, is not masked
        1.9689271916000828,
        [0.19140070680182536, 0.19749208775171478, 0.19749208775171478, 0.20871651677846534],
        0.2753663421595232,
        "fpr",
        49152,
    ),
}
PINNED_N_REFERENCE = 256
PINNED_MEDIAN_REFERENCE = 0.18528970905528308


def _sim(name):
    if name == "clean":
        return simulate_image(shape=(256, 256), seed=1).ccd
    return simulate_image(shape=(256, 256), seed=4, background="trail", level=0.8).ccd


def _check(res, pinned):
    score, first, threshold, method, masked = pinned
    assert res.score == pytest.approx(score, rel=RTOL)
    np.testing.assert_allclose(res.patch_scores.ravel()[: len(first)], first, rtol=RTOL)
    assert res.threshold == pytest.approx(threshold, rel=RTOL)
    assert res.threshold_method == method
    assert int(res.mask.sum()) == masked


def _describe(res):
    return (
        float(res.score),
        [float(v) for v in res.patch_scores.ravel()[:4]],
        float(res.threshold),
        res.threshold_method,
        int(res.mask.sum()),
    )


@pytest.mark.parametrize("name", sorted(ZERO_SHOT))
def test_pinned_zero_shot(zero_shot, name):
    if name == "trail":  # 12 % of the patches: zero-shot, that comes with a warning
        with pytest.warns(AstropyUserWarning, match="no reference of this camera"):
            res = zero_shot.evaluate(_sim(name))
    else:
        res = zero_shot.evaluate(_sim(name))
    _check(res, ZERO_SHOT[name])


@pytest.mark.parametrize("name", sorted(CALIBRATED))
def test_pinned_calibrated_camera(calibrated, name):
    res = calibrated.evaluate(_camera_frame(3, cloud=None if name == "clean" else name))
    assert res.camera_reference
    _check(res, CALIBRATED[name])


def test_pinned_calibration(calibrated):
    ref = calibrated.reference_scores_
    assert calibrated.n_reference_ == PINNED_N_REFERENCE
    assert float(np.median(ref)) == pytest.approx(PINNED_MEDIAN_REFERENCE, rel=RTOL)


if __name__ == "__main__":  # print the values to pin
    zs = AEQualityEvaluator.pretrained(device="cpu", precision="float32")
    for name in ZERO_SHOT:
        print("zero-shot", name, _describe(zs.evaluate(_sim(name))))
    cal = AEQualityEvaluator.pretrained(device="cpu", precision="float32")
    cal.calibrate([_camera_frame(s) for s in (1, 2, 5, 6)], progress_bar=False)
    for name in CALIBRATED:
        res = cal.evaluate(_camera_frame(3, cloud=None if name == "clean" else name))
        print("calibrated", name, _describe(res))
    print("n_reference", cal.n_reference_, "median", float(np.median(cal.reference_scores_)))
