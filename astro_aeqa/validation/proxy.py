# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Per-patch score maps that need no network: for studies without an evaluator.

`score_map_from_array` turns any per-pixel map (for example the truth
contamination map of `astro_aeqa.simulation`) into a score map;
``background_rms_score_map`` is the classical, truth-free proxy: the local
background RMS of each patch relative to the frame's.
"""

import warnings

import numpy as np
from astropy.nddata import NDData, block_reduce
from astropy.stats import sigma_clipped_stats

from ..io import KEYWORDS
from ..utils import nanmedian

__all__ = ["score_map_from_array", "background_rms_score_map"]


def _grid(shape, patch_size):
    p = int(patch_size)
    if p < 1:
        msg = f"patch_size must be a positive number of pixels, got {patch_size}"
        raise ValueError(msg)
    ny, nx = shape
    return p, -(-ny // p), -(-nx // p)


def _wrap(scores, p, wcs):
    sliced = None
    if wcs is not None:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", RuntimeWarning
            )  # "cdelt will be ignored since cd is present"
            sliced = wcs.slice((slice(None, None, p), slice(None, None, p)))
    return NDData(scores.astype(np.float32), wcs=sliced, meta={KEYWORDS["patch_size"]: p})


def _patch_reduce(arr, p, func):
    """``func`` over each ``p x p`` patch of ``arr``, partial patches at the far edges included.

    `~astropy.nddata.block_reduce` reduces the whole patches; the partial
    ones of the last row and column are blocks of their own size.
    """
    ny, nx = arr.shape
    fy, fx = ny // p * p, nx // p * p  # the whole patches end here
    out = np.full((-(-ny // p), -(-nx // p)), np.nan)
    for rows, hy in ((slice(0, fy), p), (slice(fy, ny), ny - fy)):
        for cols, hx in ((slice(0, fx), p), (slice(fx, nx), nx - fx)):
            if rows.stop > rows.start and cols.stop > cols.start:
                out[rows.start // p : -(-rows.stop // p), cols.start // p : -(-cols.stop // p)] = (
                    block_reduce(arr[rows, cols], (hy, hx), func=func)
                )
    return out


def score_map_from_array(pixel_map, patch_size=64, *, wcs=None, func=np.nanmean):
    """
    Return an `~astropy.nddata.NDData` score map: ``func`` of ``pixel_map`` over each patch.

    ``func`` is called as `~astropy.nddata.block_reduce` calls it, with an
    ``axis`` tuple, as NumPy's reductions take it; patches at the far edges
    may be partial. An all-NaN patch scores NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa.validation import score_map_from_array
    >>> smap = score_map_from_array(np.arange(16.0).reshape(4, 4), 2)
    >>> smap.data.tolist(), smap.meta["AEQAPSZ"]
    ([[2.5, 4.5], [10.5, 12.5]], 2)
    """
    arr = np.asarray(pixel_map, float)
    p, _, _ = _grid(arr.shape, patch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN patches
        scores = _patch_reduce(arr, p, func)
    return _wrap(scores, p, wcs)


def background_rms_score_map(ccd, patch_size=64, *, sigma=3.0):
    """
    Classical truth-free score map: sigma-clipped RMS of each patch over the frame's median patch RMS.

    A clean patch scores about 1; clouds, gradients or scattered light raise
    it. Stars are clipped. This is a proxy, not the autoencoder score.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame (its WCS is sliced to the patch grid).
    patch_size : int, optional
        Patch size in pixels.
    sigma : float, optional
        Clipping threshold.

    Returns
    -------
    score_map : `~astropy.nddata.NDData`
        ``meta['AEQAPSZ']`` is the patch size; NaN where a patch has fewer
        than 10 finite pixels.
    """
    data = np.asarray(ccd.data, float)
    p, _, _ = _grid(data.shape, patch_size)

    def clipped_rms(blocks, axis):
        rms = sigma_clipped_stats(blocks, sigma=sigma, maxiters=5, axis=axis)[2]
        return np.where(np.isfinite(blocks).sum(axis=axis) >= 10, rms, np.nan)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-NaN patches
        rms = _patch_reduce(data, p, clipped_rms)
    ref = nanmedian(rms.ravel())
    scores = rms / ref if np.isfinite(ref) and ref > 0 else rms
    return _wrap(scores, p, getattr(ccd, "wcs", None))
