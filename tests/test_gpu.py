# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""CPU/GPU parity of the evaluator. Skipped on machines without CUDA."""

import numpy as np
import pytest
from astropy import units as u

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

from astro_aeqa import AEQualityEvaluator  # noqa: E402
from astro_aeqa.simulation import PAPER_2P5M, simulate_image  # noqa: E402


@pytest.fixture(scope="module")
def frame():
    return simulate_image(
        shape=(512, 512),
        instrument=PAPER_2P5M,
        fwhm=1.0 * u.arcsec,
        background="cloud",
        level=0.6,
        seed=4,
    ).ccd


@pytest.mark.parametrize(("precision", "atol"), [("float32", 1e-4), ("bfloat16", 2e-3)])
def test_scores_and_masks_on_cuda_match_the_cpu(frame, precision, atol):
    cpu = AEQualityEvaluator.pretrained(device="cpu").evaluate(frame)
    gpu = AEQualityEvaluator.pretrained(device="cuda", precision=precision).evaluate(frame)
    finite = np.isfinite(cpu.patch_scores)
    np.testing.assert_array_equal(finite, np.isfinite(gpu.patch_scores))
    np.testing.assert_allclose(gpu.patch_scores[finite], cpu.patch_scores[finite], atol=atol)
    assert abs(gpu.score - cpu.score) < atol
    assert np.mean(gpu.mask == cpu.mask) > 0.999


def test_training_runs_on_cuda(frame):
    ev = AEQualityEvaluator(model="small", device="cuda", seed=0)
    ev.fit([frame.data[:256, :256], frame.data[256:, 256:]], n_epochs=1, progress_bar=False)
    assert ev.device.type == "cuda"
    assert np.isfinite(ev.evaluate(frame.data[:256, :256]).score)
