# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The sky quality map: the patch score maps of many frames on one celestial grid.

`sky_quality_map` reprojects the ``AEQA_SCORE`` maps of a set of frames (files
written by ``aeqa mask`` or `~astro_aeqa.AEQualityEvaluator.write_masked`, or
`~astro_aeqa.QualityResult` objects) onto the optimal celestial grid that
covers them all, and combines them where they overlap. It shows where on the
sky a night was bad. ``reproject`` is imported inside the functions: it is
needed only here.
"""

import logging
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData

from .exceptions import InputDataError
from .io import KEYWORDS, SKYMAP_KEYWORDS
from .utils import save_figure_atomic, write_hdulist_atomic
from .utils._optional import _MissingDependency

__all__ = ["plot_sky_quality_map", "sky_quality_map", "write_sky_quality_map"]

log = logging.getLogger(__name__)

_COMBINE = ("mean", "max")


def _score_map(item, index):
    """Return ``(array, wcs, name)`` of one input."""
    if isinstance(item, str | Path):
        from .io import read_aeqa_fits

        score, name = read_aeqa_fits(item).score_map, str(item)
    elif isinstance(item, NDData):
        score, name = item, f"input {index}"
    elif hasattr(item, "score_map"):  # a QualityResult
        score, name = item.score_map, f"input {index} ({type(item).__name__})"
    else:
        msg = (
            f"input {index}: expected a FITS file written by aeqa mask, a QualityResult or an "
            f"NDData score map, got {type(item).__name__}"
        )
        raise TypeError(msg)
    wcs = score.wcs
    if wcs is None or not getattr(wcs, "has_celestial", False):
        msg = (
            f"{name}: the score map has no celestial WCS, so it cannot be placed on the sky; "
            "give the frame a WCS (RA/Dec) before scoring it"
        )
        raise InputDataError(msg)
    data = np.asarray(score.data, dtype=np.float64)
    if data.ndim != 2:
        msg = f"{name}: the score map must be 2-D, got shape {data.shape}"
        raise InputDataError(msg)
    return data, wcs, name


def sky_quality_map(
    files_or_results,
    *,
    resolution=None,
    combine="mean",
    projection="TAN",
    frame=None,
    progress_bar=False,
):
    """
    Reproject the patch score maps of many frames onto one celestial grid.

    The grid is `reproject.mosaicking.find_optimal_celestial_wcs` of the
    score maps; each map is resampled with nearest-neighbour interpolation
    (a patch keeps its score) and the maps are combined with
    `reproject.mosaicking.reproject_and_coadd`. Patches without a score (NaN)
    are left out of the combination.

    Parameters
    ----------
    files_or_results : list
        FITS files written by ``aeqa mask`` or
        `~astro_aeqa.AEQualityEvaluator.write_masked` (their ``AEQA_SCORE``
        extension), `~astro_aeqa.QualityResult` objects, or
        `~astropy.nddata.NDData` score maps with a celestial WCS.
    resolution : `~astropy.units.Quantity`, optional
        Pixel size of the map (an angle). Default: the finest of the inputs,
        one patch.
    combine : {'mean', 'max'}, optional
        How overlapping frames combine: the mean score, or the worst.
    projection : str, optional
        Three-letter WCS projection code of the map. Default ``'TAN'``.
    frame : str, optional
        Celestial frame of the map (default: that of the first input).
    progress_bar : bool, optional
        Show reproject's progress bar over the frames.

    Returns
    -------
    skymap : `~astropy.nddata.CCDData`
        The combined patch scores (float32, dimensionless) with the map's
        WCS. Its ``mask`` is True where no frame has a score. Its ``meta``
        holds ``AEQACOMB`` (the combination), ``AEQANFRM`` (the number of
        frames) and ``AEQAMAXC`` (the most frames on one map pixel).

    Raises
    ------
    astro_aeqa.exceptions.InputDataError
        If an input is not an astro_aeqa output or has no celestial WCS.
    ValueError
        If ``combine`` is unknown or no input is given.
    """
    try:
        from reproject import reproject_interp
        from reproject.mosaicking import find_optimal_celestial_wcs, reproject_and_coadd
    except ImportError as exc:
        msg = "the sky quality map needs reproject: pip install 'astro_aeqa[parallel]'"
        raise _MissingDependency(msg) from exc

    if combine not in _COMBINE:
        msg = f"combine must be one of {', '.join(_COMBINE)}, got {combine!r}"
        raise ValueError(msg)
    if isinstance(files_or_results, str | Path | NDData) or hasattr(files_or_results, "score_map"):
        files_or_results = [files_or_results]
    maps = [_score_map(item, i) for i, item in enumerate(files_or_results)]
    if not maps:
        msg = "files_or_results is empty: give at least one scored frame"
        raise ValueError(msg)
    if resolution is not None:
        resolution = u.Quantity(resolution)
        if resolution.unit.physical_type != "angle" or not resolution.value > 0:
            msg = f"resolution must be a positive angle (e.g. 10 * u.arcsec), got {resolution}"
            raise u.UnitsError(msg)
    wcs_out, shape_out = find_optimal_celestial_wcs(
        [(data.shape, wcs.celestial) for data, wcs, _ in maps],
        resolution=resolution,
        projection=projection,
        frame=frame,
    )
    log.info("sky quality map of %d frames: %d x %d pixels", len(maps), *shape_out[::-1])
    # NaN scores (patches without valid pixels) get zero weight rather than poisoning the mean.
    inputs = [(np.nan_to_num(data, nan=0.0), wcs.celestial) for data, wcs, _ in maps]
    weights = [np.isfinite(data).astype(np.float64) for data, _, _ in maps]
    options = {
        "shape_out": shape_out,
        "reproject_function": reproject_interp,
        "order": "nearest-neighbor",
    }
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm as bar
    array, _ = reproject_and_coadd(
        inputs,
        wcs_out,
        input_weights=weights,
        combine_function=combine,
        progress_bar=bar,
        **options,
    )
    # how many frames have a score at each map pixel (a sum of the weights)
    coverage, _ = reproject_and_coadd(
        [(w, wcs.celestial) for w, (_, wcs, _) in zip(weights, maps, strict=True)],
        wcs_out,
        combine_function="sum",
        **options,
    )
    covered = coverage > 0.5
    array = np.where(covered, array, np.nan).astype(np.float32)
    meta = fits.Header()
    values = {"combine": combine, "n_frames": len(maps), "max_coverage": int(round(coverage.max()))}
    for name, (keyword, comment) in SKYMAP_KEYWORDS.items():
        meta[keyword] = (values[name], comment)
    return CCDData(array, wcs=wcs_out, unit=u.dimensionless_unscaled, mask=~covered, meta=meta)


def write_sky_quality_map(skymap, path, *, overwrite=False):
    """
    Write a sky quality map to FITS, atomically.

    The primary HDU holds the scores (NaN where no frame has one) and the
    WCS; the ``MASK`` extension holds the uncovered pixels (1).

    Parameters
    ----------
    skymap : `~astropy.nddata.CCDData`
        From `sky_quality_map`.
    path : str or `~pathlib.Path`
        The FITS file.
    overwrite : bool, optional
        Replace an existing file. Default `False`.

    Returns
    -------
    path : `~pathlib.Path`
    """
    hdul = skymap.to_hdu(hdu_mask="MASK", hdu_uncertainty=None, wcs_relax=True)
    hdul[0].header["BUNIT"] = ("", "AEQA patch score (dimensionless)")
    return write_hdulist_atomic(hdul, path, overwrite=overwrite)


def plot_sky_quality_map(skymap, *, path=None, overwrite=False, cmap="viridis", title=None):
    """
    Plot a sky quality map on its celestial axes.

    Parameters
    ----------
    skymap : `~astropy.nddata.CCDData`
        From `sky_quality_map`.
    path : str or `~pathlib.Path`, optional
        Also save the figure there as PNG, atomically.
    overwrite : bool, optional
        Replace an existing ``path``.
    cmap : str, optional
        Matplotlib colour map.
    title : str, optional
        Figure title. Default: the combination and the number of frames.

    Returns
    -------
    fig : `matplotlib.figure.Figure`
    """
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(7, 6), layout="constrained")
    ax = fig.add_subplot(projection=skymap.wcs)
    data = np.ma.masked_invalid(np.asarray(skymap.data, dtype=float))
    finite = data.compressed()
    vmax = np.percentile(finite, 99.5) if finite.size else 1.0
    im = ax.imshow(data, origin="lower", cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    combined = skymap.meta.get(KEYWORDS["combine"], "mean")
    fig.colorbar(im, ax=ax, label=f"AEQA patch score ({combined})")
    ax.coords[0].set_axislabel("Right ascension")
    ax.coords[1].set_axislabel("Declination")
    ax.coords.grid(color="0.6", alpha=0.5, linestyle=":")
    if title is None:
        n = skymap.meta.get(KEYWORDS["n_frames"], "?")
        title = f"Sky quality map: {combined} of {n} frames"
    ax.set_title(title)
    if path is not None:
        save_figure_atomic(fig, path, overwrite=overwrite)
    return fig
