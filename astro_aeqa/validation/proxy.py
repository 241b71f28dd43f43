# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Per-patch score maps that need no network: for studies without an evaluator.

`score_map_from_array` turns any per-pixel map (for example the truth
contamination map of `astro_aeqa.simulation`) into a score map;
`background_rms_score_map` is the classical, truth-free proxy: the local
background RMS of each patch relative to the frame's.
"""

import warnings

import numpy as np
from astropy.nddata import NDData
from astropy.stats import sigma_clipped_stats

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
    return NDData(scores.astype(np.float32), wcs=sliced, meta={"AEQAPSZ": p})


def score_map_from_array(pixel_map, patch_size=64, *, wcs=None, func=np.nanmean):
    """
    Return an `~astropy.nddata.NDData` score map: ``func`` of ``pixel_map`` over each patch.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa.validation import score_map_from_array
    >>> smap = score_map_from_array(np.arange(16.0).reshape(4, 4), 2)
    >>> smap.data.tolist(), smap.meta["AEQAPSZ"]
    ([[2.5, 4.5], [10.5, 12.5]], 2)
    """
    arr = np.asarray(pixel_map, float)
    p, gy, gx = _grid(arr.shape, patch_size)
    scores = np.full((gy, gx), np.nan)
    for j in range(gy):
        for i in range(gx):
            block = arr[j * p : (j + 1) * p, i * p : (i + 1) * p]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                scores[j, i] = func(block)
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
        ``meta['AEQAPSZ']`` is the patch size.
    """
    data = np.asarray(ccd.data, float)
    p, gy, gx = _grid(data.shape, patch_size)
    rms = np.full((gy, gx), np.nan)
    for j in range(gy):
        for i in range(gx):
            block = data[j * p : (j + 1) * p, i * p : (i + 1) * p]
            good = np.isfinite(block)
            if good.sum() < 10:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rms[j, i] = sigma_clipped_stats(block[good], sigma=sigma, maxiters=5)[2]
    ref = np.nanmedian(rms)
    scores = rms / ref if np.isfinite(ref) and ref > 0 else rms
    return _wrap(scores, p, getattr(ccd, "wcs", None))
