# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Per-star photometric error of one frame against a reference catalogue."""

import logging

import numpy as np
from astropy import units as u
from astropy.table import QTable

from ..exceptions import CatalogError, InputDataError
from ._utils import as_ccd, celestial_wcs, frame_epoch, pixel_scale
from .calibration import ZeroPointFit, crossmatch, fit_zero_point
from .catalogs import load_catalog, propagate_epoch
from .photometry import _fwhm_pixels, aperture_photometry_table, detect_stars

__all__ = ["measure_frame", "patch_scores_at"]

log = logging.getLogger(__name__)


def patch_scores_at(score_map, x, y):
    """
    Return the score of the patch under each pixel position ``(x, y)``.

    Parameters
    ----------
    score_map : `~astropy.nddata.NDData`
        Per-patch scores; ``meta['AEQAPSZ']`` is the patch size ``p`` in
        pixels. A star at ``(x, y)`` has ``score_map.data[int(y // p), int(x // p)]``.
    x, y : array-like
        Pixel positions (0-based).

    Returns
    -------
    scores : numpy.ndarray
        NaN for positions outside the map.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import NDData
    >>> from astro_aeqa.validation import patch_scores_at
    >>> smap = NDData(np.array([[0.1, 0.2], [0.3, 0.4]]), meta={"AEQAPSZ": 64})
    >>> patch_scores_at(smap, [10.0, 100.0], [70.0, 5.0]).tolist()
    [0.3, 0.2]
    """
    data = np.asarray(getattr(score_map, "data", score_map), float)
    meta = getattr(score_map, "meta", {}) or {}
    if "AEQAPSZ" not in meta:
        msg = (
            "score_map.meta lacks 'AEQAPSZ' (the patch size in pixels); use the score map of "
            "an AEQA result or set score_map.meta['AEQAPSZ'] = patch_size"
        )
        raise InputDataError(msg)
    p = float(meta["AEQAPSZ"])
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    iy = np.floor(y / p)
    ix = np.floor(x / p)
    inside = (
        (iy >= 0) & (ix >= 0) & (iy < data.shape[0]) & (ix < data.shape[1]) & np.isfinite(ix + iy)
    )
    out = np.full(x.shape, np.nan)
    out[inside] = data[iy[inside].astype(int), ix[inside].astype(int)]
    return out


def measure_frame(
    ccd,
    catalog,
    *,
    score_map=None,
    positions="detect",
    fwhm=None,
    threshold=5.0,
    match_radius=None,
    radius=None,
    annulus=None,
    snr_min=20.0,
    g_range=None,
    color_term=False,
    min_matches=10,
    max_scatter=0.3,
    fit_slope=False,
    epoch="auto",
    zero_point=None,
    name="image",
):
    """
    Measure the photometric error of every catalogue star in one frame.

    Stars are detected (or taken at the catalogue positions), measured in
    apertures with a local background, matched to the catalogue, and
    calibrated with a zero point fitted on unflagged stars whose aperture and
    background annulus are free of masked pixels, with ``snr >= snr_min``. The error of a star is ``mag_cal - mag_cat``.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame with a celestial WCS; ``ccd.mask`` (True = bad) is the
        mask under judgement (any mask, from any tool).
    catalog : `~astropy.table.Table` or str
        Reference catalogue (see `load_catalog`), or a path to one.
    score_map : `~astropy.nddata.NDData` or None, optional
        Per-patch scores with ``meta['AEQAPSZ']``; adds the ``score`` column.
    positions : {"detect", "catalog"}, optional
        Detect stars with `detect_stars` and match them, or do forced
        photometry at the catalogue positions (light curves of fixed stars).
    fwhm : float, `~astropy.units.Quantity` or None, optional
        PSF FWHM (pixels or angle); default the ``FWHMPIX`` (then ``FWHM``) keyword in pixels, or 3 px.
    threshold : float, optional
        Detection threshold in background sigmas.
    match_radius : `~astropy.units.Quantity` or None, optional
        Cross-match radius; default the larger of 1 arcsec and one pixel.
    radius, annulus : optional
        Passed to `aperture_photometry_table`.
    snr_min : float, optional
        Stars used for the zero point have at least this S/N.
    g_range : tuple or None, optional
        ``(min, max)`` catalogue G magnitudes used.
    color_term : bool, optional
        Fit a BP-RP colour term (needs ``bp_rp``).
    fit_slope : bool, optional
        Also fit a slope of catalogue against instrumental magnitude, for
        non-linear detectors (photographic plates); see `fit_zero_point`.
    min_matches : int, optional
        Fewest matched zero-point stars; fewer means the WCS or catalogue
        does not fit the frame.
    max_scatter : float, optional
        Largest zero-point scatter (mag) accepted.
    epoch : "auto", `~astropy.time.Time`, str, float or None, optional
        Propagate catalogue proper motions to this epoch ("auto": DATE-OBS).
    zero_point : float, `~astro_aeqa.validation.ZeroPointFit` or None, optional
        Use this calibration instead of fitting one (``min_matches`` and
        ``max_scatter`` are then not checked). For a frame of a sequence
        whose clear part holds too few stars, for example the median zero
        point of the sequence's clear frames of one photometric night.
    name : str, optional
        Name used in error messages and in ``meta['frame']``.

    Returns
    -------
    stars : `~astropy.table.QTable`
        One row per matched star: ``catalog_index``, ``source_id`` (if
        known), ``x``, ``y``, ``ra``, ``dec``, ``separation``, ``mag_inst``,
        ``mag_inst_err``, ``mag_cat``, ``mag_cal``, ``error`` (mag),
        ``snr``, ``score`` (NaN without a map), ``masked`` (the aperture
        touches ``ccd.mask``), ``annulus_masked``, ``blended`` (a catalogue
        neighbour at most 2.5 mag fainter within two aperture radii),
        ``saturated``, ``edge``, ``flags`` and ``zp_star`` (used for the zero
        point). ``meta`` holds ``frame``, ``zero_point``,
        ``zp_scatter``, ``color_term``, ``n_matches``, ``n_zp``,
        ``mask_ratio`` and ``frame_score``.

    Raises
    ------
    astro_aeqa.exceptions.InputDataError
        No WCS, or no star detected.
    astro_aeqa.exceptions.CatalogError
        Too few matches or too large a zero-point scatter (the WCS or the
        catalogue does not fit the frame), or a bad catalogue.

    Examples
    --------
    >>> from astro_aeqa.validation import measure_frame
    >>> from astro_aeqa.validation._synthetic import make_star_field
    >>> ccd, catalog, truth = make_star_field((192, 192), n_stars=60, seed=2, zero_point=25.0)
    >>> stars = measure_frame(ccd, catalog, fwhm=3.0)
    >>> abs(stars.meta["zero_point"] - 25.0) < 0.02
    True
    """
    ccd = as_ccd(ccd, name=name)
    wcs = celestial_wcs(ccd, name=name)
    if positions not in ("detect", "catalog"):
        msg = f"positions must be 'detect' or 'catalog', got {positions!r}"
        raise ValueError(msg)
    catalog = load_catalog(catalog, g_range=g_range)
    if isinstance(epoch, str) and epoch == "auto":
        epoch = frame_epoch(ccd)
    if epoch is not None:
        catalog = propagate_epoch(catalog, epoch)
    ny, nx = ccd.shape
    scale = pixel_scale(wcs)
    if match_radius is None:
        match_radius = max(1.0 * u.arcsec, scale)
    cx, cy = wcs.world_to_pixel_values(
        catalog["ra"].to_value(u.deg), catalog["dec"].to_value(u.deg)
    )
    cx, cy = np.asarray(cx, float), np.asarray(cy, float)
    on_frame = (cx > -0.5) & (cx < nx - 0.5) & (cy > -0.5) & (cy < ny - 0.5)
    if not on_frame.any():
        msg = (
            f"no catalogue star falls on {name} through its WCS; the WCS or the catalogue is for "
            "another field: check the WCS (CRVAL, CD) and the catalogue footprint"
        )
        raise CatalogError(msg)
    cat_idx = np.flatnonzero(on_frame)
    sub = catalog[cat_idx]
    if positions == "detect":
        stars = detect_stars(ccd, fwhm=fwhm, threshold=threshold, name=name)
        ra, dec = wcs.pixel_to_world_values(stars["x"], stars["y"])
        src = QTable({"ra": np.asarray(ra) * u.deg, "dec": np.asarray(dec) * u.deg})
        m = crossmatch(src, sub, radius=match_radius)
        xs = np.asarray(stars["x"], float)[m["source_index"]]
        ys = np.asarray(stars["y"], float)[m["source_index"]]
        ci = cat_idx[np.asarray(m["catalog_index"], int)]
        sep = m["separation"]
    else:
        xs, ys, ci = cx[cat_idx], cy[cat_idx], cat_idx
        sep = np.zeros(len(ci)) * u.arcsec
    phot = aperture_photometry_table(
        ccd,
        np.column_stack([xs, ys]) if len(xs) else np.zeros((0, 2)),
        fwhm=fwhm,
        radius=radius,
        annulus=annulus,
        name=name,
    )
    out = QTable()
    out["catalog_index"] = np.asarray(ci, int)
    if "source_id" in catalog.colnames:
        out["source_id"] = np.asarray(catalog["source_id"])[ci]
    out["x"] = xs
    out["y"] = ys
    out["ra"] = catalog["ra"][ci]
    out["dec"] = catalog["dec"][ci]
    out["separation"] = sep
    for col in ("mag_inst", "mag_inst_err", "snr", "flux", "flux_err", "bkg"):
        out[col] = phot[col]
    out["mag_cat"] = catalog["phot_g_mean_mag"][ci]
    color = catalog["bp_rp"][ci] if "bp_rp" in catalog.colnames else None
    for col in ("masked", "annulus_masked", "saturated", "edge", "flags"):
        out[col] = phot[col]
    if score_map is not None:
        out["score"] = patch_scores_at(score_map, xs, ys)
    else:
        out["score"] = np.full(len(out), np.nan)
    # a catalogue neighbour (up to 2.5 mag fainter) within two aperture radii: blended
    from scipy.spatial import cKDTree

    r_ap = float(phot.meta.get("radius", 1.5 * _fwhm_pixels(ccd, fwhm)))
    gmag = catalog["phot_g_mean_mag"].to_value(u.mag)
    tree = cKDTree(np.column_stack([cx[cat_idx], cy[cat_idx]]))
    blended = np.zeros(len(out), bool)
    for k, neigh in enumerate(
        tree.query_ball_point(np.column_stack([xs, ys]), 2 * r_ap) if len(xs) else []
    ):
        others = [cat_idx[j] for j in neigh if cat_idx[j] != ci[k]]
        blended[k] = any(gmag[j] < gmag[ci[k]] + 2.5 for j in others)
    out["blended"] = blended
    usable = (
        np.isfinite(out["mag_inst"].value)
        & ~out["masked"]
        & ~out["annulus_masked"]
        & ~blended
        & ~out["saturated"]
        & ~out["edge"]
        & (np.nan_to_num(np.asarray(out["snr"], float)) >= snr_min)
    )
    if color_term and color is None:
        msg = "color_term=True needs a 'bp_rp' column (or phot_bp_mean_mag and phot_rp_mean_mag) in the catalogue"
        raise CatalogError(msg)
    if zero_point is not None:
        fit = (
            zero_point
            if isinstance(zero_point, ZeroPointFit)
            else ZeroPointFit(zero_point=float(zero_point), used=np.zeros(int(usable.sum()), bool))
        )
    else:
        n_usable = int(usable.sum())
        if n_usable < min_matches:
            msg = (
                f"only {n_usable} unmasked catalogue stars with S/N >= {snr_min:g} matched {name} within "
                f"{match_radius.to(u.arcsec):.2f} ({len(out)} matches in all; need min_matches="
                f"{min_matches}); check the WCS, the catalogue magnitude range and the FWHM, or "
                "increase match_radius / lower snr_min (or, for a frame of a sequence that is "
                "mostly masked, pass zero_point= from its clear frames)"
            )
            raise CatalogError(msg)
        fit = fit_zero_point(
            out["mag_inst"][usable],
            out["mag_cat"][usable],
            color=color[usable] if color_term else None,
            slope=fit_slope,
        )
        if not fit.scatter <= max_scatter:
            msg = (
                f"zero-point scatter {fit.scatter:.3f} mag on {name} is above max_scatter="
                f"{max_scatter} mag: the matches are probably wrong (bad WCS or another field) or the "
                "catalogue band does not fit; check the WCS, or raise max_scatter"
            )
            raise CatalogError(msg)
    out["mag_cal"] = fit.apply(out["mag_inst"], color if color_term else None) * u.mag
    out["error"] = out["mag_cal"] - out["mag_cat"]
    zp_star = np.zeros(len(out), bool)
    if fit.used.size == usable.sum():
        zp_star[np.flatnonzero(usable)[fit.used]] = True
    out["zp_star"] = zp_star
    mask = ccd.mask
    out.meta.update(
        {
            "frame": str(name),
            "zero_point": fit.zero_point,
            "zp_scatter": fit.scatter,
            "color_term": fit.color_term,
            "slope": fit.slope,
            "n_matches": len(out),
            "n_zp": fit.n_used,
            "zp_fixed": zero_point is not None,
            "mask_ratio": float(np.mean(mask)) if mask is not None else 0.0,
            "frame_score": float(np.nanmean(np.asarray(score_map.data, float)))
            if score_map is not None
            else np.nan,
            "date_obs": str(ccd.meta.get("DATE-OBS", "")),
            "match_radius_arcsec": float(match_radius.to_value(u.arcsec)),
        }
    )
    log.info(
        "%s: %d matches, zero point %.3f +- %.3f mag (%d stars)",
        name,
        len(out),
        fit.zero_point,
        fit.scatter,
        fit.n_used,
    )
    return out
