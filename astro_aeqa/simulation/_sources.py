# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Random star and galaxy populations (private)."""

import numpy as np
from astropy import units as u

__all__ = ["sample_power_law_mags", "default_mag_range", "galaxy_params"]

STAR_DENSITY = 1.2e-3  # stars per pixel: ~20,000 on a 4096 x 4096 frame
GALAXY_FRACTION = 0.1  # galaxies per star by default


def sample_power_law_mags(n, mag_range, alpha, rng):
    """Magnitudes with dN/dm ~ 10**(alpha m) in ``mag_range`` (inverse CDF)."""
    m0, m1 = mag_range
    uni = rng.random(n)
    if alpha == 0:
        return m0 + uni * (m1 - m0)
    span = 10.0 ** (alpha * (m1 - m0)) - 1.0
    return m0 + np.log10(1.0 + uni * span) / alpha


def default_mag_range(instrument, fwhm_pix):
    """
    From two magnitudes brighter than saturation to one below the 5-sigma limit.

    The peak pixel of a star holds about ``1 / (1.13 fwhm**2)`` of its flux.
    """
    t = instrument.exposure_time.to_value(u.s)
    gain = instrument.gain.to_value(u.electron / u.adu)
    well = (instrument.saturation - instrument.bias).to_value(u.adu) * gain
    peak_fraction = 1.0 / (1.133 * fwhm_pix**2)
    m_sat = instrument.zero_point.value - 2.5 * np.log10(well / peak_fraction / t)
    sky = instrument.sky_electrons_per_pixel()
    dark = instrument.dark_current.to_value(u.electron / u.s) * t
    rn = instrument.read_noise.to_value(u.electron)
    n_pix = np.pi * fwhm_pix**2  # aperture of radius 1 FWHM
    noise = np.sqrt(n_pix * (sky + dark + rn**2))
    m_lim = instrument.zero_point.value - 2.5 * np.log10(5.0 * noise / t)
    return float(m_sat - 2.0), float(m_lim + 1.0)


def galaxy_params(mags, pixel_scale, rng):
    """Disc + bulge Sersic parameters for galaxies of magnitude ``mags``."""
    n = len(mags)
    mid = np.median(mags) if n else 0.0
    r_disc = 10 ** rng.uniform(np.log10(0.4), np.log10(2.5), n) * 10 ** (-0.1 * (mags - mid))
    r_disc = np.clip(r_disc, 0.2, 6.0) / pixel_scale  # arcsec -> pixels
    return {
        "r_disc": r_disc,
        "q_disc": rng.uniform(0.2, 1.0, n),
        "bulge_fraction": rng.uniform(0.0, 0.6, n),
        "r_bulge": 0.5 * r_disc,
        "q_bulge": rng.uniform(0.6, 1.0, n),
        "theta": rng.uniform(0.0, np.pi, n),
    }
