# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Star detection and aperture photometry with a local background (photutils 3.x)."""

import logging
import warnings

import numpy as np
from astropy import units as u
from astropy.stats import SigmaClip, sigma_clipped_stats
from astropy.table import QTable
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture, aperture_photometry
from photutils.background import Background2D, MedianBackground, StdBackgroundRMS
from photutils.detection import DAOStarFinder
from photutils.utils import calc_total_error
from photutils.utils.exceptions import NoDetectionsWarning

from ..exceptions import InputDataError
from ..flags import AEQAFlags
from ._utils import as_ccd, error_array, meta_float, to_pixels

__all__ = ["detect_stars", "aperture_photometry_table", "effective_gain", "saturation_level"]

log = logging.getLogger(__name__)

_DEFAULT_FWHM = 3.0


def _fwhm_pixels(ccd, fwhm):
    if fwhm is None:
        fwhm = meta_float(ccd.meta, ("FWHMPIX", "SEEING_PIX", "FWHM"), _DEFAULT_FWHM)
    return to_pixels(fwhm, ccd.wcs if ccd.wcs is not None else None, "fwhm")


def _bad_pixels(ccd, use_mask):
    bad = ~np.isfinite(ccd.data)
    if use_mask and ccd.mask is not None:
        bad = bad | np.asarray(ccd.mask, bool)
    return bad


def detect_stars(ccd, *, fwhm=None, threshold=5.0, n_brightest=None, use_mask=False, name="image"):
    """
    Detect point sources with `~photutils.detection.DAOStarFinder`.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame (not background-subtracted).
    fwhm : float, `~astropy.units.Quantity` or None, optional
        PSF FWHM in pixels, or as an angle (needs a WCS). Default: the
        ``FWHMPIX`` (then ``FWHM``) keyword of ``ccd.meta``, in pixels, else 3.
    threshold : float, optional
        Detection threshold in units of the sigma-clipped background RMS.
    n_brightest : int or None, optional
        Keep only the brightest ``n_brightest`` sources.
    use_mask : bool, optional
        If True, masked pixels (``ccd.mask``) are not searched. The default
        False finds masked stars too, so that their photometry can be judged.
    name : str, optional
        Name of the input used in error messages (for example the file name).

    Returns
    -------
    stars : `~astropy.table.QTable`
        ``id``, ``x``, ``y`` (pixels, 0-based), ``peak``, ``sharpness``,
        ``roundness``, sorted by decreasing peak.

    Raises
    ------
    astro_aeqa.exceptions.InputDataError
        If no star is found.

    Examples
    --------
    >>> from astro_aeqa.validation import detect_stars
    >>> from astro_aeqa.validation._synthetic import make_star_field
    >>> ccd, catalog, truth = make_star_field((128, 128), n_stars=20, seed=1)
    >>> stars = detect_stars(ccd, fwhm=3.0)
    >>> len(stars) >= 15
    True
    """
    ccd = as_ccd(ccd, name=name)
    fwhm_pix = _fwhm_pixels(ccd, fwhm)
    data = np.asarray(ccd.data, float)
    bad = _bad_pixels(ccd, use_mask)
    if bad.all():
        msg = f"{name} has no valid pixel to search for stars (all NaN, inf or masked)"
        raise InputDataError(msg)
    _, median, std = sigma_clipped_stats(data, mask=bad, sigma=3.0, maxiters=5)
    if not np.isfinite(std) or std <= 0:
        std = float(np.nanstd(data[~bad])) or 1.0
    finder = DAOStarFinder(threshold * std, fwhm_pix, exclude_border=True, n_brightest=n_brightest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        found = finder.find_stars(np.where(bad, median, data) - median, mask=bad)
    if found is None or len(found) == 0:
        msg = (
            f"no stars detected in {name} (threshold {threshold} sigma above a background RMS "
            f"of {std:.3g}, fwhm {fwhm_pix:.2f} px); lower threshold=, check fwhm=, or use "
            "forced photometry at catalogue positions (positions='catalog')"
        )
        raise InputDataError(msg)
    stars = QTable()
    stars["id"] = np.arange(1, len(found) + 1)
    stars["x"] = np.asarray(found["x_centroid"], float)
    stars["y"] = np.asarray(found["y_centroid"], float)
    stars["peak"] = np.asarray(found["peak"], float)
    stars["sharpness"] = np.asarray(found["sharpness"], float)
    stars["roundness"] = np.asarray(found["roundness1"], float)
    stars.sort("peak", reverse=True)
    stars["id"] = np.arange(1, len(stars) + 1)
    log.debug("%s: %d stars detected", name, len(stars))
    return stars


#: Header keywords of the gain (electrons per data unit), first found wins; the
#: per-amplifier keywords GAINA, GAINB, ... are averaged when none is present.
GAIN_KEYWORDS = ("GAIN", "EGAIN", "CCDGAIN", "ARAWGAIN")
_AMP_GAIN_KEYWORDS = ("GAINA", "GAINB", "GAINC", "GAIND")
#: Header keywords of the saturation level (the lowest of the per-amplifier ones).
SATURATION_KEYWORDS = ("SATURATE", "SATLEVEL", "SATURATA", "SATURATB", "SATURATC", "SATURATD")


def effective_gain(ccd, *, gain=None, exptime=None):
    """
    Return the number of electrons per data unit of ``ccd`` (the ``effective_gain`` of photutils).

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame. Data in ``electron`` need no gain; data in ``electron / s``
        (or ``adu / s``) are multiplied by the exposure time.
    gain : float, `~astropy.units.Quantity` or None, optional
        Gain in electron / adu; default the ``GAIN``, ``EGAIN``, ``CCDGAIN``
        keyword, else the mean of ``GAINA``, ``GAINB``, ... (one per
        amplifier), else 1.
    exptime : float or None, optional
        Exposure time in s; default ``EXPTIME`` (or ``EXPOSURE``), else 1.

    Returns
    -------
    effective_gain : float

    Examples
    --------
    >>> from astropy.nddata import CCDData
    >>> from astro_aeqa.validation import effective_gain
    >>> effective_gain(CCDData([[1.0]], unit="adu", meta={"GAINA": 3.0, "GAINB": 4.0}))
    3.5
    >>> effective_gain(CCDData([[1.0]], unit="electron / s", meta={"EXPTIME": 30.0}))
    30.0
    """
    meta = ccd.meta or {}
    if exptime is None:
        exptime = meta_float(meta, ("EXPTIME", "EXPOSURE"), 1.0)
    unit = ccd.unit if ccd.unit is not None else u.adu
    per_second = any(unit.is_equivalent(c / u.s) for c in (u.electron, u.adu, u.ct, u.photon))
    base = unit * u.s if per_second else unit
    if base.is_equivalent(u.electron):
        value = float((1.0 * base).to_value(u.electron))
    else:
        if isinstance(gain, u.Quantity):
            gain = float(gain.to_value(u.electron / u.adu))
        if gain is None:
            gain = meta_float(meta, GAIN_KEYWORDS, None)
        if gain is None:
            amps = [meta_float(meta, (key,), None) for key in _AMP_GAIN_KEYWORDS]
            amps = [g for g in amps if g is not None and g > 0]
            gain = float(np.mean(amps)) if amps else 1.0
        value = float(gain)
    return value * (float(exptime) if per_second else 1.0)


#: Without a saturation keyword, stars whose peak is within this fraction (of the
#: range from the median sky to the frame maximum) of the maximum are on the plateau.
PLATEAU_MARGIN = 0.02


def saturation_level(ccd, *, saturation=None, margin=0.1, data=None):
    """
    Return the level (data units) above which a star's peak is flagged saturated.

    With a ``SATURATE`` (or ``SATLEVEL``, or per-amplifier ``SATURATA``, ...)
    keyword, the lowest one less ``margin`` of it: detectors turn non-linear
    below the level where they saturate. Without one the frame's own
    maximum stands for the level where it saturates (a plate, or a frame
    whose header lost the keyword): the brightest stars reach it first, and
    stars within ``PLATEAU_MARGIN`` (2 %, of the range from the median sky
    to the maximum) of it sit on the plateau.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame.
    saturation : float, "auto" or None, optional
        An explicit level (used as given, without margin); "auto" or None
        for the keywords and then the frame maximum.
    margin : float, optional
        Fraction below the ``SATURATE`` level where non-linearity starts.
    data : numpy.ndarray or None, optional
        ``ccd.data`` as float, when already at hand.

    Returns
    -------
    level : float or None
        None when the frame has no finite pixel.
    """
    if saturation is not None and not (isinstance(saturation, str) and saturation == "auto"):
        return float(saturation)
    meta = ccd.meta or {}
    levels = [meta_float(meta, (key,), None) for key in SATURATION_KEYWORDS]
    levels = [v for v in levels if v is not None and v > 0]
    if levels:
        return (1.0 - margin) * min(levels)
    data = np.asarray(ccd.data, float) if data is None else data
    finite = data[np.isfinite(data)]
    if not finite.size:
        return None
    top, sky = float(finite.max()), float(np.median(finite))
    return sky + (1.0 - PLATEAU_MARGIN) * (top - sky)


def _sky_error(data, nonfinite, box, fallback):
    """Local 1-sigma sky noise per pixel (`~photutils.background.Background2D`), or a constant."""
    ny, nx = data.shape
    box = int(max(16, box))
    if ny >= 2 * box and nx >= 2 * box:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bkg = Background2D(
                    data,
                    box,
                    mask=nonfinite,
                    filter_size=3,
                    sigma_clip=SigmaClip(sigma=3.0, maxiters=5),
                    bkg_estimator=MedianBackground(),
                    bkgrms_estimator=StdBackgroundRMS(),
                    exclude_percentile=50,
                )
            return np.asarray(bkg.background, float), np.asarray(bkg.background_rms, float)
        except ValueError:
            log.debug("Background2D failed on a %dx%d frame; constant sky noise used", ny, nx)
    return None, np.full(data.shape, fallback)


def aperture_photometry_table(
    ccd,
    positions,
    *,
    fwhm=None,
    radius=None,
    annulus=None,
    gain=None,
    read_noise=None,
    saturation="auto",
    saturation_margin=0.1,
    flux_floor=True,
    name="image",
):
    """
    Measure circular-aperture fluxes with a sigma-clipped local annulus background.

    The error of a flux comes from photutils'
    `~photutils.utils.calc_total_error`: the local sky noise (a
    `~photutils.background.Background2D` RMS map, so a cloud's structure
    counts) plus the Poisson noise of the star, with the effective gain of
    ``effective_gain`` (``GAIN``/``EGAIN``/``GAINA``+``GAINB``..., electron
    units, per-second units), plus the error of the subtracted annulus
    background. ``ccd.uncertainty``, when present, is used instead.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame. Its ``mask`` is not used to drop pixels (only NaN/inf
        are), but a star whose aperture touches a masked pixel is flagged
        ``masked``, so that masked stars can be compared with the others.
    positions : array-like of shape (N, 2) or `~astropy.table.Table`
        ``(x, y)`` pixel positions (0-based), or a table with ``x`` and ``y``.
    fwhm : float, `~astropy.units.Quantity` or None, optional
        PSF FWHM (pixels or angle); default as in `detect_stars`.
    radius : float, `~astropy.units.Quantity` or None, optional
        Aperture radius; default ``1.5 * fwhm``.
    annulus : tuple of two floats or None, optional
        Inner and outer annulus radii in pixels; default ``(3, 5) * fwhm``.
    gain : float, `~astropy.units.Quantity` or None, optional
        Gain in electron / adu; default from the header (``effective_gain``).
    read_noise : float or None, optional
        Read noise in electrons, a floor of the sky noise; default
        ``RDNOISE`` (or ``READNOIS``, ``RON``), else 0.
    saturation : float, "auto" or None, optional
        Peak level above which a star is flagged ``saturated``; "auto" (or
        None) uses ``saturation_level``: ``SATURATE`` less
        ``saturation_margin``, else the plateau at the frame's maximum.
    saturation_margin : float, optional
        See ``saturation_level``.
    flux_floor : bool, optional
        If True (default), a star measured at less than its 1-sigma flux
        error (a star that clouds dim away, in forced photometry) gets the
        magnitude of its 1-sigma flux, a bound, and ``flux_floored`` is set:
        it stays in the studies instead of turning into NaN.
    name : str, optional
        Name of the input used in error messages.

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per position: ``x``, ``y``, ``flux`` and ``flux_err`` (data
        units, background subtracted), ``bkg`` (per pixel), ``bkg_rms``,
        ``snr``, ``peak``, ``mag_inst`` and ``mag_inst_err`` (mag, from flux per second
        when ``EXPTIME`` is known), the booleans ``flux_floored``,
        ``saturated``, ``edge``, ``nonfinite`` (a NaN or inf pixel inside
        the aperture: the flux misses it), ``masked`` (the aperture touches
        ``ccd.mask``), ``annulus_masked`` (the background annulus does) and
        ``flags`` (`~astro_aeqa.flags.AEQAFlags` bits SATURATED, EDGE,
        INPUT_MASKED, NON_FINITE).

    Examples
    --------
    >>> from astro_aeqa.validation import aperture_photometry_table
    >>> from astro_aeqa.validation._synthetic import make_star_field
    >>> ccd, catalog, truth = make_star_field((128, 128), n_stars=20, seed=1)
    >>> phot = aperture_photometry_table(ccd, catalog, fwhm=3.0)
    >>> phot.colnames[:4]
    ['x', 'y', 'flux', 'flux_err']
    """
    ccd = as_ccd(ccd, name=name)
    if hasattr(positions, "colnames"):
        missing = [c for c in ("x", "y") if c not in positions.colnames]
        if missing:
            msg = f"positions table lacks the column(s) {missing}; it needs 'x' and 'y' (pixels)"
            raise InputDataError(msg)
        xy = np.column_stack([np.asarray(positions["x"], float), np.asarray(positions["y"], float)])
    else:
        xy = np.atleast_2d(np.asarray(positions, float))
        if xy.size == 0:
            xy = np.zeros((0, 2))
        if xy.ndim != 2 or xy.shape[1] != 2:
            msg = f"positions must have shape (N, 2) as (x, y) pairs, got {xy.shape}"
            raise InputDataError(msg)
    fwhm_pix = _fwhm_pixels(ccd, fwhm)
    r = 1.5 * fwhm_pix if radius is None else to_pixels(radius, ccd.wcs, "radius")
    if annulus is None:
        r_in, r_out = 3.0 * fwhm_pix, 5.0 * fwhm_pix
    else:
        r_in, r_out = (to_pixels(a, ccd.wcs, "annulus") for a in annulus)
    if not 0 < r <= r_in < r_out:
        msg = (
            f"need 0 < radius <= annulus inner < annulus outer, got {r:g}, {r_in:g}, {r_out:g} "
            "pixels; give --aperture R and --annulus RIN ROUT (pixels) with R <= RIN < ROUT"
        )
        raise ValueError(msg)
    meta = ccd.meta
    exptime = meta_float(meta, ("EXPTIME", "EXPOSURE"), 1.0)
    eff_gain = effective_gain(ccd, gain=gain, exptime=exptime)
    read_noise = (
        meta_float(meta, ("RDNOISE", "READNOIS", "RON", "RDNOISEA"), 0.0)
        if read_noise is None
        else float(read_noise)
    )
    data = np.asarray(ccd.data, float)
    ny, nx = data.shape
    table = QTable()
    table["x"] = xy[:, 0]
    table["y"] = xy[:, 1]
    n = len(xy)
    table.meta.update(
        {
            "radius": r,
            "annulus": (r_in, r_out),
            "effective_gain": eff_gain,
            "read_noise": read_noise,
            "exptime": exptime,
        }
    )
    if n == 0:
        for col in (
            "flux",
            "flux_err",
            "bkg",
            "bkg_rms",
            "snr",
            "peak",
            "mag_inst",
            "mag_inst_err",
        ):
            table[col] = np.zeros(0)
        for col in ("flux_floored", "saturated", "edge", "nonfinite", "masked", "annulus_masked"):
            table[col] = np.zeros(0, bool)
        table["flags"] = np.zeros(0, np.uint16)
        return table
    nonfinite = ~np.isfinite(data)
    aper = CircularAperture(xy, r)
    ann = CircularAnnulus(xy, r_in, r_out)
    clip = SigmaClip(sigma=3.0, maxiters=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ann_stats = ApertureStats(data, ann, mask=nonfinite, sigma_clip=clip)
        bkg = np.asarray(ann_stats.median, float)
        bkg_rms = np.asarray(ann_stats.std, float)
        n_ann = np.asarray(ann_stats.sum_aper_area.value, float)
        aper_stats = ApertureStats(data, aper, mask=nonfinite)
        peak = np.asarray(aper_stats.max, float)
    bkg = np.where(np.isfinite(bkg), bkg, np.nan)
    unc = error_array(ccd)
    if unc is None:
        # calc_total_error: the local sky noise (read noise as a floor) plus the
        # star's Poisson noise in electrons
        floor = read_noise / eff_gain if eff_gain > 0 else 0.0
        fallback = float(np.nanmedian(bkg_rms)) if np.isfinite(bkg_rms).any() else floor
        sky, sky_err = _sky_error(data, nonfinite, 2 * r_out, fallback)
        sky_err = np.sqrt(np.nan_to_num(sky_err, nan=fallback) ** 2 + floor**2)
        sky = np.nanmedian(bkg) if sky is None else sky
        unc = calc_total_error(np.nan_to_num(data - sky), sky_err, eff_gain)
    phot = aperture_photometry(
        np.where(nonfinite, 0.0, data),
        aper,
        error=np.where(nonfinite | ~np.isfinite(unc), 0.0, unc),
        mask=nonfinite,
    )
    raw = np.asarray(phot["aperture_sum"], float)
    raw_err = np.asarray(phot["aperture_sum_err"], float)
    area = np.asarray(aper.area_overlap(data, mask=nonfinite), float)
    full_area = np.asarray(aper.area_overlap(np.zeros_like(data)), float)
    has_nonfinite = area < full_area - 1e-6
    flux = raw - bkg * area
    with np.errstate(divide="ignore", invalid="ignore"):
        flux_err = np.sqrt(raw_err**2 + area**2 * bkg_rms**2 / np.maximum(n_ann, 1))
        snr = flux / flux_err
        floored = flux_floor & np.isfinite(flux_err) & (flux_err > 0) & ~(flux >= flux_err)
        flux_mag = np.where(floored, flux_err, flux)
        mag = -2.5 * np.log10(flux_mag / exptime)
        mag_err = 2.5 / np.log(10) * flux_err / flux_mag
    good = np.isfinite(flux_mag) & (flux_mag > 0)
    mag = np.where(good, mag, np.nan)
    mag_err = np.where(good, mag_err, np.nan)
    # flags
    edge = (
        (xy[:, 0] - r_out < -0.5)
        | (xy[:, 0] + r_out > nx - 0.5)
        | (xy[:, 1] - r_out < -0.5)
        | (xy[:, 1] + r_out > ny - 0.5)
    )
    level = saturation_level(ccd, saturation=saturation, margin=saturation_margin, data=data)
    saturated = np.zeros(n, bool) if level is None else np.nan_to_num(peak) >= level
    if ccd.mask is not None:
        mask_float = np.asarray(ccd.mask, bool).astype(float)
        masked = np.nan_to_num(np.asarray(ApertureStats(mask_float, aper).max, float)) > 0
        annulus_masked = np.nan_to_num(np.asarray(ApertureStats(mask_float, ann).max, float)) > 0
    else:
        masked = np.zeros(n, bool)
        annulus_masked = np.zeros(n, bool)
    flags = (
        saturated * int(AEQAFlags.SATURATED)
        | edge * int(AEQAFlags.EDGE)
        | masked * int(AEQAFlags.INPUT_MASKED)
        | has_nonfinite * int(AEQAFlags.NON_FINITE)
    ).astype(np.uint16)
    unit = ccd.unit if ccd.unit is not None else u.adu
    table["flux"] = flux * unit
    table["flux_err"] = flux_err * unit
    table["bkg"] = bkg * unit
    table["bkg_rms"] = bkg_rms * unit
    table["snr"] = snr
    table["peak"] = peak * unit
    table["mag_inst"] = mag * u.mag
    table["mag_inst_err"] = mag_err * u.mag
    table["flux_floored"] = floored
    table["saturated"] = saturated
    table["edge"] = edge
    table["nonfinite"] = has_nonfinite
    table["masked"] = masked
    table["annulus_masked"] = annulus_masked
    table["flags"] = flags
    table.meta["saturation"] = level
    return table
