# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The WCS of the patch grid of a frame (the score map's)."""

import logging
import math
import warnings

import numpy as np
from astropy.wcs import WCS, Sip

from ._tiling import patch_grid_shape
from .exceptions import AEQAWarning

__all__ = ["score_map_wcs"]

log = logging.getLogger(__name__)


def _sliced_wcs(wcs, step):
    """The WCS of ``wcs`` sampled every ``step`` pixels (linear part scaled, SIP rescaled)."""
    new = wcs.deepcopy()
    crpix = (wcs.wcs.crpix - 0.5) / step + 0.5
    new.wcs.crpix = crpix
    # Scale the matrix, not CDELT: sequent distortions (e.g. DSS plates) act on
    # the intermediate pixel coordinates, which then stay unchanged.
    if wcs.wcs.has_cd():
        new.wcs.cd = wcs.wcs.cd * step
    else:
        new.wcs.pc = wcs.wcs.get_pc() * step
    if wcs.sip is not None:

        def scale(coeffs):
            if coeffs is None:
                return None
            p, q = np.indices(coeffs.shape)
            return coeffs * float(step) ** (p + q - 1)

        sip = wcs.sip
        new.sip = Sip(scale(sip.a), scale(sip.b), scale(sip.ap), scale(sip.bp), crpix)
    new.wcs.set()
    return new


def _slice_error(original, sliced, step, shape):
    """Largest offset (original pixels) between patch centres and the sliced WCS."""
    n_py, n_px = shape
    jj = np.array([0, n_px - 1, 0, n_px - 1, n_px // 2], dtype=float)
    ii = np.array([0, 0, n_py - 1, n_py - 1, n_py // 2], dtype=float)
    world = sliced.pixel_to_world_values(jj, ii)
    x, y = original.world_to_pixel_values(*world)
    expect_x = jj * step + (step - 1) / 2
    expect_y = ii * step + (step - 1) / 2
    return float(np.nanmax(np.hypot(x - expect_x, y - expect_y)))


def score_map_wcs(wcs, patch_size, shape):
    """
    Return the WCS of the patch grid: ``wcs`` sampled every ``patch_size`` pixels.

    Patch ``(i, j)`` of the score map (array order) is centred, in the image,
    on pixel ``(i * p + (p - 1) / 2, j * p + (p - 1) / 2)``; the returned WCS
    gives that patch centre's sky position at pixel ``(i, j)``. (A partial
    patch at the far edge is given the position its centre would have if
    it were whole.) This is ``wcs.slice((slice(None, None, p),) * 2)``, but
    the linear matrix (not CDELT) is scaled and SIP coefficients are
    rescaled, so that distorted WCSs (SIP, DSS plate solutions) stay exact.

    Parameters
    ----------
    wcs : `~astropy.wcs.WCS` or None
        The image WCS (2-D).
    patch_size : int
        Side of a patch, in pixels.
    shape : tuple of int
        Image shape ``(ny, nx)``; sets the WCS ``array_shape`` to the grid.

    Returns
    -------
    wcs : `~astropy.wcs.WCS` or None
        None if ``wcs`` is None.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> from astro_aeqa._wcs import score_map_wcs
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crpix = [50.5, 50.5]; w.wcs.cdelt = [-1e-4, 1e-4]; w.wcs.crval = [10.0, 20.0]
    >>> s = score_map_wcs(w, 10, (100, 100))
    >>> s.array_shape, [round(float(v), 6) for v in s.wcs.crpix]
    ((10, 10), [5.5, 5.5])
    """
    if wcs is None:
        return None
    if not isinstance(wcs, WCS) or wcs.pixel_n_dim != 2:
        msg = f"wcs must be a 2-D astropy.wcs.WCS or None, got {type(wcs).__name__}"
        raise TypeError(msg)
    p = int(patch_size)
    grid = patch_grid_shape(shape, p)
    candidates = []
    try:
        candidates.append(_sliced_wcs(wcs, p))
    except Exception as exc:  # unusual WCS: fall back to astropy's slicing
        log.debug("own WCS slicing failed (%s); using WCS.slice", exc)
    candidates.append(wcs.slice((slice(None, None, p), slice(None, None, p))))
    best, best_err = None, math.inf
    for cand in candidates:
        try:
            err = _slice_error(wcs, cand, p, grid)
        except Exception:  # noqa: BLE001 - a WCS that cannot be inverted
            err = math.inf
        if err < best_err:
            best, best_err = cand, err
        if err < 1e-3:
            break
    if not best_err < 0.01:
        msg = (
            f"the score map WCS is approximate: patch centres are off by up to {best_err:.3g} "
            "image pixels (the image WCS has a distortion that cannot be resampled exactly)"
        )
        warnings.warn(msg, AEQAWarning)
    best.array_shape = grid
    return best
