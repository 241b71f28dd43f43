# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Per-star photometric error of one frame against a reference catalogue."""

import logging

import numpy as np
from astropy import units as u
from astropy.table import QTable

from ..exceptions import CatalogError, InputDataError
from ..io import KEYWORDS
from ._utils import as_ccd, celestial_wcs, frame_epoch, pixel_scale, to_pixels
from .calibration import ZeroPointFit, crossmatch, fit_zero_point
from .catalogs import load_catalog, propagate_epoch, reference_stars, warn_epoch_gap
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
    if KEYWORDS["patch_size"] not in meta:
        msg = (
            "score_map.meta lacks 'AEQAPSZ' (the patch size in pixels); use the score map of "
            "an AEQA result or set score_map.meta['AEQAPSZ'] = patch_size"
        )
        raise InputDataError(msg)
    p = float(meta[KEYWORDS["patch_size"]])
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


def _refusal_options(curve, color_term, positions):
    """The options that could help a frame whose zero point is refused, named for Python and the CLI."""
    tips = []
    if curve != "spline":
        tips.append(
            "a characteristic curve for a non-linear detector (photographic plate, a frame near "
            "saturation): curve='poly3' or 'spline' (--curve poly3)"
        )
    tips.append(
        "drop saturated bright or noisy faint stars: g_range=(MIN, MAX) (--g-range MIN MAX), a "
        "lower saturation= or a higher snr_min= (--snr-min)"
    )
    if not color_term:
        tips.append("a band far from Gaia G: color_term=True (--color-term)")
    tips.append("a crowded field: a smaller aperture= (--aperture R --annulus RIN ROUT, pixels)")
    if positions == "catalog":
        tips.append(
            "a WCS off by more than the aperture: positions='detect' with match_radius= "
            "(--positions detect --match-radius ARCSEC)"
        )
    else:
        tips.append("a WCS off by about the match radius: match_radius= (--match-radius ARCSEC)")
    tips.append("or accept it: max_scatter= (--max-scatter)")
    return "; ".join(tips)


def measure_frame(
    ccd,
    catalog,
    *,
    score_map=None,
    positions="catalog",
    fwhm=None,
    threshold=5.0,
    match_radius=None,
    radius=None,
    annulus=None,
    snr_min=20.0,
    g_range=None,
    ruwe_max=1.4,
    reject_variables=True,
    color_term=False,
    min_matches="auto",
    max_scatter=0.3,
    fit_slope=False,
    curve="auto",
    saturation="auto",
    saturation_margin=0.1,
    blend_delta_mag=2.5,
    epoch="auto",
    zero_point=None,
    name="image",
):
    """
    Measure the photometric error of every catalogue star in one frame.

    The reference stars (catalogue rows in ``g_range``, with RUWE at most
    ``ruwe_max``, not variable) are measured by forced aperture photometry
    at their catalogue positions (the default: a star that a cloud dims
    below detection stays in the studies) or detected and matched. Each is
    flagged ``blended`` when any row of the whole catalogue, not only of
    ``g_range``, at most ``blend_delta_mag`` fainter lies within the
    aperture's reach (aperture radius plus 1.5 FWHM). The calibration (a
    zero point, or a characteristic curve chosen by cross-validation, see
    `fit_zero_point`) is fitted on unflagged stars whose aperture and
    annulus are free of masked pixels, with ``snr >= snr_min``. The error of
    a star is ``mag_cal - mag_cat``.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame with a celestial WCS; ``ccd.mask`` (True = bad) is the
        mask under judgement (any mask, from any tool).
    catalog : `~astropy.table.Table`, str or list
        Reference catalogue (see `load_catalog`), or one or several paths.
        Give the whole catalogue: its fainter and brighter rows are the
        neighbours that blend a star.
    score_map : `~astropy.nddata.NDData` or None, optional
        Per-patch scores with ``meta['AEQAPSZ']``; adds the ``score`` column.
    positions : {"catalog", "detect"}, optional
        Forced photometry at the catalogue positions (default), or detect
        stars with `detect_stars` and match them within ``match_radius``.
    fwhm : float, `~astropy.units.Quantity` or None, optional
        PSF FWHM (pixels or angle); default the ``FWHMPIX`` (then ``FWHM``) keyword in pixels, or 3 px.
    threshold : float, optional
        Detection threshold in background sigmas (``positions="detect"``).
    match_radius : `~astropy.units.Quantity` or None, optional
        Cross-match radius; default the larger of 1 arcsec and one pixel.
    radius, annulus : optional
        Aperture radius and annulus radii, passed to `aperture_photometry_table`.
    snr_min : float, optional
        Stars used for the zero point have at least this S/N.
    g_range : tuple or None, optional
        ``(min, max)`` G magnitudes of the stars measured; the blend check
        uses every catalogue row.
    ruwe_max : float or None, optional
        Stars with a larger ``ruwe`` (when the column exists) are not measured.
    reject_variables : bool, optional
        Stars with ``phot_variable_flag == "VARIABLE"`` are not measured.
    color_term : bool, optional
        Fit a BP-RP colour term (needs ``bp_rp``).
    min_matches : int or "auto", optional
        Fewest zero-point stars; fewer means the WCS or catalogue does not
        fit the frame. "auto": a third of the unflagged, unmasked stars measured
        at S/N >= 5, between 3 and 10, so that a small frame with a few stars
        calibrates.
    max_scatter : float, optional
        Largest robust zero-point scatter (mag) accepted.
    fit_slope : bool, optional
        Same as ``curve="linear"``.
    curve : {"auto", "offset", "linear", "poly2", "poly3", "spline"}, optional
        The characteristic curve (see `fit_zero_point`); "auto" chooses it by
        cross-validation, so a CCD gets an offset and a plate a curve.
    saturation, saturation_margin : optional
        Passed to `aperture_photometry_table`: stars whose peak is above the
        level are flagged ``saturated``.
    blend_delta_mag : float, optional
        A neighbour at most this much fainter blends a star.
    epoch : "auto", `~astropy.time.Time`, str, float or None, optional
        Propagate catalogue proper motions to this epoch ("auto": DATE-OBS);
        warns when the catalogue has no proper motions and the epochs are
        more than 10 years apart.
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
        One row per measured star: ``catalog_index``, ``source_id`` (if
        known), ``x``, ``y``, ``ra``, ``dec``, ``separation``, ``mag_inst``,
        ``mag_inst_err``, ``mag_cat``, ``mag_cal``, ``mag_cal_err`` (the
        instrumental error times the slope of the curve, with the
        zero-point error), ``error`` (mag), ``snr``, ``score`` (NaN without
        a map), ``flux_floored`` (measured below its 1-sigma error: its
        magnitude is that of its 1-sigma flux), ``masked`` (the aperture
        touches ``ccd.mask``), ``annulus_masked``, ``blended``,
        ``saturated``, ``edge``, ``nonfinite`` (NaN pixels in the aperture),
        ``flags`` and ``zp_star`` (used for the calibration). ``meta``
        holds ``frame``, ``zero_point``, ``zp_err``, ``zp_scatter``,
        ``curve``, ``slope``, ``color_term``, ``n_matches``, ``n_zp``,
        ``n_blended``, ``mask_ratio``, ``frame_score`` and the options used.

    Raises
    ------
    astro_aeqa.exceptions.InputDataError
        No WCS, or no star detected.
    astro_aeqa.exceptions.CatalogError
        Too few zero-point stars or too large a zero-point scatter (the
        message names the options that could help), or a bad catalogue.

    Examples
    --------
    >>> from astro_aeqa.validation import measure_frame
    >>> from astro_aeqa.validation._synthetic import make_star_field
    >>> ccd, catalog, truth = make_star_field((192, 192), n_stars=60, seed=2, zero_point=25.0)
    >>> stars = measure_frame(ccd, catalog, fwhm=3.0)
    >>> abs(stars.meta["zero_point"] - 25.0) < 0.02, stars.meta["curve"]
    (True, 'offset')
    """
    from scipy.spatial import cKDTree

    ccd = as_ccd(ccd, name=name)
    wcs = celestial_wcs(ccd, name=name)
    if positions not in ("detect", "catalog"):
        msg = f"positions must be 'catalog' or 'detect', got {positions!r}"
        raise ValueError(msg)
    if fit_slope:
        curve = "linear"
    catalog = load_catalog(catalog)
    source = catalog.meta.get("source", "table")
    if isinstance(epoch, str) and epoch == "auto":
        epoch = frame_epoch(ccd)
    if epoch is not None:
        warn_epoch_gap(catalog, epoch, source=f"catalogue {source}")
        catalog = propagate_epoch(catalog, epoch)
    ny, nx = ccd.shape
    scale = pixel_scale(wcs)
    if match_radius is None:
        match_radius = max(1.0 * u.arcsec, scale)
    elif not isinstance(match_radius, u.Quantity):
        match_radius = float(match_radius) * u.arcsec
    fwhm_pix = _fwhm_pixels(ccd, fwhm)
    r_ap = 1.5 * fwhm_pix if radius is None else to_pixels(radius, wcs, "radius")
    reach = r_ap + 1.5 * fwhm_pix
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
    near = np.flatnonzero(
        (cx > -0.5 - reach)
        & (cx < nx - 0.5 + reach)
        & (cy > -0.5 - reach)
        & (cy < ny - 0.5 + reach)
    )
    chosen = on_frame & reference_stars(
        catalog, g_range=g_range, ruwe_max=ruwe_max, reject_variables=reject_variables
    )
    cat_idx = np.flatnonzero(chosen)
    if not cat_idx.size:
        msg = (
            f"{int(on_frame.sum())} catalogue stars fall on {name}, but none is in g_range="
            f"{g_range} with ruwe <= {ruwe_max} and not variable; widen g_range (--g-range) or "
            "raise ruwe_max (--ruwe-max)"
        )
        raise CatalogError(msg)
    if positions == "detect":
        stars = detect_stars(ccd, fwhm=fwhm, threshold=threshold, name=name)
        ra, dec = wcs.pixel_to_world_values(stars["x"], stars["y"])
        src = QTable({"ra": np.asarray(ra) * u.deg, "dec": np.asarray(dec) * u.deg})
        frame_idx = np.flatnonzero(on_frame)  # match against every star, not only the chosen
        m = crossmatch(src, catalog[frame_idx], radius=match_radius)
        ci_all = frame_idx[np.asarray(m["catalog_index"], int)]
        keep = chosen[ci_all]
        xs = np.asarray(stars["x"], float)[np.asarray(m["source_index"], int)[keep]]
        ys = np.asarray(stars["y"], float)[np.asarray(m["source_index"], int)[keep]]
        ci = ci_all[keep]
        sep = m["separation"][keep]
    else:
        xs, ys, ci = cx[cat_idx], cy[cat_idx], cat_idx
        sep = np.zeros(len(ci)) * u.arcsec
    phot = aperture_photometry_table(
        ccd,
        np.column_stack([xs, ys]) if len(xs) else np.zeros((0, 2)),
        fwhm=fwhm,
        radius=radius,
        annulus=annulus,
        saturation=saturation,
        saturation_margin=saturation_margin,
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
    for col in ("mag_inst", "mag_inst_err", "snr", "flux", "flux_err", "bkg", "peak"):
        out[col] = phot[col]
    out["mag_cat"] = catalog["phot_g_mean_mag"][ci]
    color = catalog["bp_rp"][ci] if "bp_rp" in catalog.colnames else None
    for col in (
        "flux_floored",
        "masked",
        "annulus_masked",
        "saturated",
        "edge",
        "nonfinite",
        "flags",
    ):
        out[col] = phot[col]
    if score_map is not None:
        out["score"] = patch_scores_at(score_map, xs, ys)
    else:
        out["score"] = np.full(len(out), np.nan)
    # blended: a neighbour from the whole catalogue, at most blend_delta_mag fainter,
    # within the aperture's reach
    gmag = catalog["phot_g_mean_mag"].to_value(u.mag)
    tree = cKDTree(np.column_stack([cx[near], cy[near]]))
    blended = np.zeros(len(out), bool)
    if len(xs):
        for k, neigh in enumerate(tree.query_ball_point(np.column_stack([xs, ys]), reach)):
            others = near[np.asarray(neigh, int)]
            others = others[others != ci[k]]
            blended[k] = bool(np.any(~(gmag[others] > gmag[ci[k]] + blend_delta_mag)))
    out["blended"] = blended
    flagged = (
        out["blended"] | out["saturated"] | out["edge"] | out["nonfinite"] | out["flux_floored"]
    )
    clean = ~flagged & ~out["masked"] & ~out["annulus_masked"]
    usable = (
        clean
        & np.isfinite(out["mag_inst"].value)
        & (np.nan_to_num(np.asarray(out["snr"], float)) >= snr_min)
    )
    if color_term and color is None:
        msg = (
            f"color_term=True needs a 'bp_rp' column (or phot_bp_mean_mag and phot_rp_mean_mag, "
            f"or VizieR's BP-RP) in the catalogue {source}"
        )
        raise CatalogError(msg)
    if isinstance(min_matches, str):
        if min_matches != "auto":
            msg = f"min_matches must be an integer or 'auto', got {min_matches!r}"
            raise ValueError(msg)
        visible = clean & (np.nan_to_num(np.asarray(out["snr"], float)) >= min(5.0, snr_min))
        min_matches = int(np.clip(int(visible.sum()) // 3, 3, 10))
    if zero_point is not None:
        fit = (
            zero_point
            if isinstance(zero_point, ZeroPointFit)
            else ZeroPointFit(
                zero_point=float(zero_point),
                used=np.zeros(int(usable.sum()), bool),
                zero_point_err=0.0,
            )
        )
    else:
        n_usable = int(usable.sum())
        if n_usable < min_matches:
            how = (
                f"matched {name} within {match_radius.to(u.arcsec):.2f}"
                if positions == "detect"
                else f"measured at their catalogue positions on {name}"
            )
            msg = (
                f"only {n_usable} unmasked, unflagged catalogue stars with S/N >= {snr_min:g} "
                f"{how} ({len(out)} measured, {int(blended.sum())} blended, "
                f"{int(np.sum(out['saturated']))} saturated; need min_matches={min_matches}); "
                "check the WCS, the catalogue magnitude range (g_range, --g-range) and the FWHM "
                "(--fwhm), or lower snr_min (--snr-min) or min_matches (--min-matches)"
                + (", increase match_radius (--match-radius)" if positions == "detect" else "")
                + " (or, for a frame of a sequence that is mostly masked, pass zero_point= "
                "from its clear frames)"
            )
            raise CatalogError(msg)
        fit = fit_zero_point(
            out["mag_inst"][usable],
            out["mag_cat"][usable],
            color=color[usable] if color_term else None,
            curve=curve,
        )
        if not fit.scatter <= max_scatter:
            msg = (
                f"zero-point scatter {fit.scatter:.3f} mag (robust, curve '{fit.curve}', "
                f"{fit.n_used} stars) on {name} is above max_scatter={max_scatter} mag. "
                "Options that may help: " + _refusal_options(fit.curve, color_term, positions)
            )
            raise CatalogError(msg)
    mag_cal = fit.apply(out["mag_inst"], color if color_term else None)
    out["mag_cal"] = mag_cal * u.mag
    zp_err = fit.zero_point_err if np.isfinite(fit.zero_point_err) else 0.0
    out["mag_cal_err"] = (
        np.hypot(np.abs(fit.derivative(out["mag_inst"])) * out["mag_inst_err"].value, zp_err)
        * u.mag
    )
    out["error"] = out["mag_cal"] - out["mag_cat"]
    zp_star = np.zeros(len(out), bool)
    if fit.used.size == usable.sum():
        zp_star[np.flatnonzero(usable)[fit.used]] = True
    out["zp_star"] = zp_star
    mask = ccd.mask
    out.meta.update(
        {
            "frame": str(name),
            "catalog": str(source),
            "positions": positions,
            "zero_point": fit.zero_point,
            "zp_err": float(zp_err),
            "zp_scatter": fit.scatter,
            "curve": fit.curve,
            "cv_scatter": {k: float(v) for k, v in fit.cv_scatter.items()},
            "color_term": fit.color_term,
            "slope": fit.slope,
            "n_matches": len(out),
            "n_zp": fit.n_used,
            "n_blended": int(blended.sum()),
            "min_matches": int(min_matches),
            "zp_fixed": zero_point is not None,
            "mask_ratio": float(np.mean(mask)) if mask is not None else 0.0,
            "frame_score": float(np.nanmean(np.asarray(score_map.data, float)))
            if score_map is not None
            else np.nan,
            "date_obs": str(ccd.meta.get("DATE-OBS", "")),
            "match_radius_arcsec": float(match_radius.to_value(u.arcsec)),
            "aperture_radius_pix": float(phot.meta["radius"]),
            "annulus_pix": [float(v) for v in phot.meta["annulus"]],
            "saturation": phot.meta.get("saturation"),
            "g_range": None
            if g_range is None
            else [None if g is None else float(g) for g in g_range],
        }
    )
    log.info(
        "%s: %d stars, %s calibration %.3f +- %.3f mag (%d stars)",
        name,
        len(out),
        fit.curve,
        fit.zero_point,
        fit.scatter,
        fit.n_used,
    )
    return out
