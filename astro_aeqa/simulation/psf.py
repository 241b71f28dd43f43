# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Point spread functions of the simulator."""

import numpy as np

from ._render import Canvas, EffectivePSF, add_stamps

__all__ = ["make_psf_image", "PSF_MODELS", "PSF_DEFECTS"]

PSF_MODELS = ("moffat", "gaussian")
PSF_DEFECTS = ("elongated", "double", "defocus")


def _check_psf_args(model, beta, ellipticity, defect=None, defect_level=0.0):
    if model not in PSF_MODELS:
        msg = f"psf must be one of {PSF_MODELS}, got {model!r}"
        raise ValueError(msg)
    beta = float(beta)
    if not np.isfinite(beta) or beta <= 1.0:
        msg = f"beta must be a number above 1 (the Moffat power index; 2.5 is typical), got {beta}"
        raise ValueError(msg)
    ellipticity = float(ellipticity)
    if not 0.0 <= ellipticity < 1.0:
        msg = f"ellipticity must lie in [0, 1), got {ellipticity}"
        raise ValueError(msg)
    if defect is not None and defect not in PSF_DEFECTS:
        msg = f"psf_defect must be None or one of {PSF_DEFECTS}, got {defect!r}"
        raise ValueError(msg)
    return beta, ellipticity


def psf_radius(fwhm_pix, defect=None, defect_level=0.0, factor=5.0):
    """Stamp half-size (pixels) holding the PSF out to ``factor`` FWHM."""
    extra = 0.0
    if defect is not None:
        extra = 4.0 * fwhm_pix
    return int(np.ceil(factor * fwhm_pix + extra)) + 2


def make_psf_image(
    shape,
    fwhm_pix,
    *,
    position=None,
    flux=1.0,
    psf="moffat",
    beta=2.5,
    ellipticity=0.0,
    theta=0.0,
    psf_defect=None,
    defect_level=0.5,
):
    """
    Return a noiseless image of one point source.

    The PSF is integrated over the pixels (by oversampling) and the stamp is
    normalised, so the image sums to ``flux`` when the stamp fits inside.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    fwhm_pix : float
        Full width at half maximum in pixels (geometric mean of the axes).
    position : tuple of float, optional
        ``(x, y)`` of the source, 0-based pixel coordinates; default the centre.
    flux : float, optional
        Total flux of the source.
    psf : {'moffat', 'gaussian'}, optional
        The profile.
    beta : float, optional
        Moffat power index.
    ellipticity : float, optional
        ``1 - b / a``, in [0, 1).
    theta : float, optional
        Angle of the major axis from the x axis, in radians.
    psf_defect : {None, 'elongated', 'double', 'defocus'}, optional
        A defect applied to the PSF.
    defect_level : float, optional
        Strength of the defect, in [0, 1].

    Returns
    -------
    image : `~numpy.ndarray`
        2-D float64 array.

    Examples
    --------
    >>> from astro_aeqa.simulation import make_psf_image
    >>> img = make_psf_image((41, 41), 3.0, position=(20.3, 19.8))
    >>> round(float(img.sum()), 6)
    1.0
    """
    beta, ellipticity = _check_psf_args(psf, beta, ellipticity, psf_defect, defect_level)
    fwhm_pix = float(fwhm_pix)
    if not np.isfinite(fwhm_pix) or fwhm_pix <= 0:
        msg = f"fwhm_pix must be a positive number of pixels, got {fwhm_pix}"
        raise ValueError(msg)
    ny, nx = shape
    if position is None:
        position = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    half = min(psf_radius(fwhm_pix, psf_defect, defect_level), max(ny, nx))
    epsf = EffectivePSF(
        fwhm_pix,
        half,
        model=psf,
        beta=beta,
        ellipticity=ellipticity,
        theta=theta,
        defect=psf_defect,
        defect_level=defect_level,
    )
    canvas = Canvas((ny, nx))
    add_stamps(
        canvas,
        epsf,
        np.array([position[0]], float),
        np.array([position[1]], float),
        np.array([flux], float),
        half,
    )
    return canvas.image()
