# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Shared fixtures. Tests run against the installed package."""

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

try:  # hypothesis keeps its caches out of the checkout (tests/test_fuzz.py)
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "astro_aeqa-hypothesis")
except ImportError:
    pass

try:
    from pytest_astropy_header.display import PYTEST_HEADER_MODULES

    PYTEST_HEADER_MODULES.clear()
    PYTEST_HEADER_MODULES.update(
        {
            "numpy": "numpy",
            "scipy": "scipy",
            "astropy": "astropy",
            "photutils": "photutils",
            "ccdproc": "ccdproc",
            "torch": "torch",
        }
    )
except ImportError:
    pass


import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy import units as u  # noqa: E402

# A tiny network keeps the whole suite fast; it is trained once per session.
TINY_CONFIG = {"base_channels": 8, "n_down": 2, "n_res_blocks": 1, "max_channels": 32}


@pytest.fixture(scope="session")
def reference_frames():
    """Clean simulated 256x256 frames of one survey (the paper's 2.5 m telescope)."""
    from astro_aeqa.simulation import PAPER_2P5M, simulate_image

    return [
        simulate_image(
            shape=(256, 256),
            instrument=PAPER_2P5M,
            fwhm=(0.6 + 0.05 * i) * u.arcsec,
            background=None,
            seed=100 + i,
        ).ccd
        for i in range(4)
    ]


@pytest.fixture(scope="session")
def tiny_evaluator(reference_frames):
    """An evaluator with a tiny network trained briefly on the reference frames."""
    from astro_aeqa import AEQualityEvaluator
    from astro_aeqa.nn import AutoencoderConfig

    ev = AEQualityEvaluator(
        AutoencoderConfig(**TINY_CONFIG),
        patch_size=32,
        tile_size=64,
        overlap=8,
        crop_size=64,
        fpr=0.05,
        device="cpu",
        seed=0,
    )
    ev.fit(
        reference_frames,
        n_epochs=3,
        batch_size=8,
        steps_per_epoch=20,
        val_fraction=0.5,
        progress_bar=False,
    )
    return ev


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
