# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Turbulence-like random screens made with an FFT (private)."""

import numpy as np
from scipy import ndimage

__all__ = ["phase_screen"]

_MAX_DIRECT = 1024


def phase_screen(shape, rng, *, outer_scale=None, spectrum="von_karman"):
    """
    Return a random screen of ``shape`` normalised to [0, 1].

    The power spectrum is Kolmogorov, ``P(k) ~ k**(-11/3)``, or von Karman,
    ``P(k) ~ (k**2 + 1 / outer_scale**2)**(-11/6)`` (``outer_scale`` in
    pixels). Screens larger than 1024 pixels are made at a lower resolution
    and interpolated: clouds have little power on small scales.
    """
    ny, nx = shape
    factor = max(1, int(np.ceil(max(ny, nx) / _MAX_DIRECT)))
    sy, sx = int(np.ceil(ny / factor)) + 2, int(np.ceil(nx / factor)) + 2
    ky = np.fft.fftfreq(sy)[:, None]
    kx = np.fft.rfftfreq(sx)[None, :]
    k2 = ky**2 + kx**2
    if spectrum == "kolmogorov" or outer_scale is None:
        k2[0, 0] = np.inf
        power = k2 ** (-11.0 / 6.0)
    else:
        k0 = factor / float(outer_scale)
        power = (k2 + k0**2) ** (-11.0 / 6.0)
        power[0, 0] = 0.0
    noise = rng.standard_normal((sy, kx.shape[1])) + 1j * rng.standard_normal((sy, kx.shape[1]))
    screen = np.fft.irfft2(noise * np.sqrt(power), s=(sy, sx))
    if factor > 1:
        screen = ndimage.zoom(screen, factor, order=1, prefilter=False)
    screen = screen[:ny, :nx]
    lo, hi = screen.min(), screen.max()
    return ((screen - lo) / max(hi - lo, 1e-30)).astype(np.float32)
