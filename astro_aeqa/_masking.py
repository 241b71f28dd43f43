# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
From patch scores to a pixel mask: threshold, morphology, expansion, OR.

* A threshold comes from a false-mask rate calibrated on clean reference
  patches (`conformal_threshold`, with `pvalues` for per-patch evidence), or,
  without a calibration, from the robust spread of the frame's own scores
  (`robust_threshold`).
* `clean_patch_mask` is the paper's dilation and erosion: an opening drops
  isolated patches, a closing fills holes between masked patches.
* `patch_mask_to_pixel_mask` expands the patch grid to pixels and
  `combine_masks` ORs it into the input mask (never replacing it).
* `build_flag_plane` packs the per-pixel reasons into the ``AEQA_FLAGS``
  bit plane (bits from `astro_aeqa.flags.AEQAFlags`).

Masks follow the astropy convention: True means bad.
"""

import math
import warnings

import numpy as np
from astropy.stats import mad_std
from scipy import ndimage

from ._tiling import patches_to_pixels
from .exceptions import AEQAWarning
from .flags import AEQAFlags, flag_plane_dtype

__all__ = [
    "conformal_threshold",
    "pvalues",
    "robust_threshold",
    "clean_patch_mask",
    "patch_mask_to_pixel_mask",
    "combine_masks",
    "build_flag_plane",
]

# the bytes of the flag plane's rows built at a time (a buffer that stays in the cache)
_FLAG_BAND_BYTES = 1 << 18


def _finite_sorted(reference_scores, name="reference_scores"):
    ref = np.asarray(reference_scores, dtype=np.float64).ravel()
    ref = np.sort(ref[np.isfinite(ref)])
    if ref.size == 0:
        msg = f"{name} has no finite value; calibrate on clean reference patches first"
        raise ValueError(msg)
    return ref


def conformal_threshold(reference_scores, fpr):
    """
    Return the split-conformal threshold for a false-mask rate ``fpr``.

    The threshold is the ``ceil((n + 1) * (1 - fpr))``-th smallest of the
    ``n`` finite reference scores (scores of held-out clean patches). A new
    clean patch, exchangeable with the references, then has a score strictly
    above the threshold with probability at most ``fpr``.

    Parameters
    ----------
    reference_scores : array-like
        Scores of clean reference patches; non-finite values are ignored.
    fpr : float
        Wanted false-mask rate, in (0, 1).

    Returns
    -------
    threshold : float
        ``+inf`` (with an `~astro_aeqa.exceptions.AEQAWarning`) when the
        reference set is too small for this ``fpr``: it needs
        ``n >= 1 / fpr - 1`` scores.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._masking import conformal_threshold
    >>> conformal_threshold(np.arange(1.0, 100.0), fpr=0.1)
    90.0
    """
    fpr = float(fpr)
    if not 0.0 < fpr < 1.0:
        msg = f"fpr must lie in (0, 1) (a false-mask rate such as 0.01), got {fpr}"
        raise ValueError(msg)
    ref = _finite_sorted(reference_scores)
    n = ref.size
    # guard against 1 - fpr rounding: (n + 1) * (1 - fpr) computed exactly when possible
    k = math.ceil(round((n + 1) * (1.0 - fpr), 9))
    if k > n:
        need = math.ceil(1.0 / fpr - 1.0)
        smallest = 1.0 / (n + 1) if n else 1.0
        msg = (
            f"the reference set has {n} finite scores, too few for fpr={fpr} "
            f"(need at least {need}); nothing will be masked (threshold = inf). "
            f"Calibrate on more reference patches, or use fpr >= {smallest:.3g}, the "
            "smallest these scores support."
        )
        warnings.warn(msg, AEQAWarning)
        return math.inf
    return float(ref[max(k, 1) - 1])


def pvalues(scores, reference_scores):
    """
    Return conformal p-values of ``scores`` against clean reference scores.

    ``p = (1 + #{ref >= s}) / (n + 1)``: small when a score is higher than
    almost all clean references. A clean patch has a p-value that is
    (super-)uniform on (0, 1].

    Parameters
    ----------
    scores : array-like
        Any shape. NaN scores give NaN p-values.
    reference_scores : array-like
        Scores of clean reference patches; non-finite values are ignored.

    Returns
    -------
    p : `~numpy.ndarray`
        float64, the shape of ``scores``, in ``[1 / (n + 1), 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._masking import pvalues
    >>> pvalues([0.0, 2.5, 10.0, np.nan], [1.0, 2.0, 3.0]).tolist()
    [1.0, 0.5, 0.25, nan]
    """
    ref = _finite_sorted(reference_scores)
    s = np.asarray(scores, dtype=np.float64)
    n_ge = ref.size - np.searchsorted(ref, s, side="left")
    p = (1.0 + n_ge) / (ref.size + 1.0)
    return np.where(np.isnan(s), np.nan, p)


def robust_threshold(scores, *, k=5.0):
    """
    Return ``median + k * mad_std`` of the finite scores.

    The fallback when no reference calibration exists: a patch is flagged
    when it is a ``k``-sigma outlier among the frame's own patches, sigma
    being the robust standard deviation `~astropy.stats.mad_std` (1.4826
    times the median absolute deviation).

    Examples
    --------
    >>> from astro_aeqa._masking import robust_threshold
    >>> round(robust_threshold([1.0, 2.0, 3.0, 4.0, 100.0], k=1.0), 4)
    4.4826
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0:
        msg = "scores has no finite value; cannot derive a threshold"
        raise ValueError(msg)
    return float(np.median(s) + k * mad_std(s))


def _structure(structure):
    if isinstance(structure, str):
        if structure == "cross":
            return ndimage.generate_binary_structure(2, 1)
        if structure == "square":
            return ndimage.generate_binary_structure(2, 2)
        msg = f"structure must be 'cross', 'square' or a 2-D bool array, got {structure!r}"
        raise ValueError(msg)
    st = np.asarray(structure, dtype=bool)
    if st.ndim != 2:
        msg = f"structure must be a 2-D bool array, got shape {st.shape}"
        raise ValueError(msg)
    return st


def clean_patch_mask(patch_mask, *, opening=1, closing=1, structure="cross", reconstruct=True):
    """
    Clean a boolean patch mask with binary opening, then closing.

    The opening (``opening`` iterations) drops isolated masked patches (a
    lone bright-star patch); the closing (``closing`` iterations) fills holes
    between masked patches. 0 disables a step. The opening's erosion
    treats the outside of the grid as masked, so a masked region that
    touches the frame edge is not eroded by the frame edge; the closing
    works as on an unbounded, unmasked plane, so the frame edge never
    creates a masked region.

    By default the opening is an *opening by reconstruction*: the mask is
    eroded, and every connected region of the original mask that keeps at
    least one patch after the erosion is kept whole. Lone patches and lines
    thinner than the structuring element go, while the regions that stay
    keep their exact shape (a plain opening with the cross would cut the
    corners off a 3x3 block of masked patches). ``reconstruct=False`` gives
    the plain `scipy.ndimage.binary_opening`.

    Parameters
    ----------
    patch_mask : array-like
        2-D bool patch grid (True = masked).
    opening, closing : int, optional
        Iterations of each step. Default 1.
    structure : {"cross", "square"} or array-like, optional
        Structuring element: 4-connected cross (default), 8-connected
        square, or a 2-D bool array. It also sets the connectivity of the
        reconstruction.
    reconstruct : bool, optional
        Opening by reconstruction (default `True`) or plain opening.

    Returns
    -------
    mask : `~numpy.ndarray`
        New bool array of the same shape.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._masking import clean_patch_mask
    >>> m = np.zeros((5, 6), bool); m[0:3, 0:3] = True; m[3, 5] = True
    >>> clean_patch_mask(m).astype(int)
    array([[1, 1, 1, 0, 0, 0],
           [1, 1, 1, 0, 0, 0],
           [1, 1, 1, 0, 0, 0],
           [0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0]])
    """
    mask = np.asarray(patch_mask, dtype=bool)
    if mask.ndim != 2:
        msg = f"patch_mask must be a 2-D grid, got shape {mask.shape}"
        raise ValueError(msg)
    for name, value in (("opening", opening), ("closing", closing)):
        if isinstance(value, bool) or int(value) != value or value < 0:
            msg = f"{name} must be an integer >= 0 (0 disables it), got {value!r}"
            raise ValueError(msg)
    st = _structure(structure)
    out = mask.copy()
    n_open, n_close = int(opening), int(closing)
    # The opening's erosion treats the outside of the grid as masked
    # (border_value=1), so the frame edge never erodes a masked region.
    if n_open and out.any():
        seed = ndimage.binary_erosion(out, structure=st, iterations=n_open, border_value=1)
        if reconstruct:
            out = ndimage.binary_propagation(seed, structure=st, mask=out)
        else:
            out = ndimage.binary_dilation(seed, structure=st, iterations=n_open) & out
    if n_close and out.any():
        # closing as on an unbounded plane: pad with unmasked patches so the
        # dilated set never reaches the array border
        pad = n_close * (max(st.shape) // 2) + 1
        grown = ndimage.binary_dilation(np.pad(out, pad), structure=st, iterations=n_close)
        closed = ndimage.binary_erosion(grown, structure=st, iterations=n_close)
        out = closed[pad:-pad, pad:-pad] | out
    return out


def patch_mask_to_pixel_mask(patch_mask, patch_size, shape):
    """
    Expand a boolean patch grid to a boolean pixel mask of ``shape``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._masking import patch_mask_to_pixel_mask
    >>> patch_mask_to_pixel_mask(np.array([[False, True]]), 2, (2, 3)).astype(int).tolist()
    [[0, 0, 1], [0, 0, 1]]
    """
    return patches_to_pixels(np.asarray(patch_mask, dtype=bool), patch_size, shape)


def _one_value(plane):
    """True if ``plane`` is one value broadcast (a read-only view, often of
    nothing to mark) rather than an array of its own."""
    return plane.size > 0 and not any(plane.strides)


def negated(plane):
    """``~plane``; a bool plane that is one value broadcast stays a view,
    rather than a frame-sized array."""
    plane = np.asarray(plane, dtype=bool)
    if _one_value(plane):
        return np.broadcast_to(~plane.flat[0], plane.shape)
    return ~plane


def combine_masks(input_mask, new_mask):
    """
    Return ``input_mask OR new_mask`` as a new bool array.

    The input mask is never replaced or modified; ``input_mask=None`` means
    nothing was masked on input.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._masking import combine_masks
    >>> combine_masks(np.array([True, False]), np.array([False, False])).tolist()
    [True, False]
    """
    new = np.asarray(new_mask, dtype=bool)
    if input_mask is None:
        return new.copy()
    old = np.asarray(input_mask, dtype=bool)
    if old.shape != new.shape:
        msg = f"input_mask has shape {old.shape} but the new mask has shape {new.shape}"
        raise ValueError(msg)
    return old | new


def build_flag_plane(
    shape,
    *,
    low_quality=None,
    non_finite=None,
    saturated=None,
    input_masked=None,
    edge=None,
    star_kept=None,
    outside_footprint=None,
    trail=None,
):
    """
    Pack per-pixel reasons into an ``AEQA_FLAGS`` bit plane.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    low_quality, non_finite, saturated, input_masked, edge, star_kept, outside_footprint, trail : array-like, optional
        Bool pixel arrays of ``shape`` (None: bit not set anywhere); bits
        from `astro_aeqa.flags.AEQAFlags`.

    Returns
    -------
    flags : `~numpy.ndarray`
        Array of ``shape``, of the narrowest unsigned integer type that holds
        every bit (`astro_aeqa.flags.flag_plane_dtype`: uint8 today).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa._masking import build_flag_plane
    >>> build_flag_plane((1, 2), low_quality=np.array([[True, False]]),
    ...                  edge=np.array([[True, True]])).tolist()
    [[17, 16]]
    """
    shape = tuple(int(n) for n in shape)
    dtype = flag_plane_dtype()
    flags = np.zeros(shape, dtype=dtype)
    parts = {
        "low_quality": (low_quality, AEQAFlags.LOW_QUALITY),
        "non_finite": (non_finite, AEQAFlags.NON_FINITE),
        "saturated": (saturated, AEQAFlags.SATURATED),
        "input_masked": (input_masked, AEQAFlags.INPUT_MASKED),
        "edge": (edge, AEQAFlags.EDGE),
        "star_kept": (star_kept, AEQAFlags.STAR_KEPT),
        "outside_footprint": (outside_footprint, AEQAFlags.OUTSIDE_FOOTPRINT),
        "trail": (trail, AEQAFlags.TRAIL),
    }
    planes = []
    for name, (arr, bit) in parts.items():
        if arr is None:
            continue
        arr = np.asarray(arr, dtype=bool)
        if arr.shape != shape:
            msg = f"{name} must have the image shape {shape}, got {arr.shape}"
            raise ValueError(msg)
        bit = dtype.type(int(bit))
        if _one_value(arr):
            if arr.flat[0]:
                flags |= bit
            continue
        planes.append((arr, bit))
    # each plane times its bit, OR-ed in (3-7x faster than bitwise_or with
    # where=), a band of rows at a time through a small buffer that stays in
    # the cache
    rows = max(1, _FLAG_BAND_BYTES // max(1, shape[1] * dtype.itemsize))
    term = np.empty((min(rows, shape[0]), shape[1]), dtype=dtype)
    for start in range(0, shape[0], rows):
        band = flags[start : start + rows]
        out = term[: len(band)]
        for arr, bit in planes:
            np.multiply(arr[start : start + rows], bit, out=out)
            band |= out
    return flags
