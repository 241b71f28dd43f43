# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
A SkyMaker-like image simulator with truth.

It makes star and galaxy fields for a telescope and camera (`Instrument`),
with a Moffat or Gaussian PSF, PSF defects, sky, dark current, Poisson and
read noise, and complex backgrounds (clouds, moonlight, shutter, satellite
trails, diffraction spikes). Each frame comes with a truth catalogue and a
truth contamination map.
"""

from .image import BACKGROUNDS, DEFAULT_POINTING, SimulatedImage, simulate_image, simulate_sequence
from .instrument import GWAC_LIKE, PAPER_2P5M, Instrument
from .psf import PSF_DEFECTS, PSF_MODELS, make_psf_image

__all__ = [
    "simulate_image",
    "simulate_sequence",
    "SimulatedImage",
    "Instrument",
    "PAPER_2P5M",
    "GWAC_LIKE",
]
