# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Star detection and aperture photometry with a local background (photutils 3.x)."""

import logging
import warnings

import numpy as np
from astropy import units as u
from astropy.stats import SigmaClip, sigma_clipped_stats
from astropy.table import QTable
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture, aperture_photometry
from photutils.detection import DAOStarFinder
from photutils.utils.exceptions import NoDetectionsWarning

from ..exceptions import InputDataError
from ..flags import AEQAFlags
from ._utils import as_ccd, error_array, meta_float, to_pixels

__all__ = ["detect_stars", "aperture_photometry_table"]

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


def aperture_photometry_table(
    ccd,
    positions,
    *,
    fwhm=None,
    radius=None,
    annulus=None,
    gain=None,
    read_noise=None,
    saturation=None,
    name="image",
):
    """
    Measure circular-aperture fluxes with a sigma-clipped local annulus background.

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
    gain, read_noise : float or None, optional
        Gain in e-/adu and read noise in e-, for the noise model used when
        ``ccd.uncertainty`` is None. Default: ``GAIN``/``RDNOISE`` from meta,
        else 1 and 0.
    saturation : float or None, optional
        Saturation level in data units; default ``SATURATE`` from meta.
    name : str, optional
        Name of the input used in error messages.

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per position: ``x``, ``y``, ``flux`` and ``flux_err`` (data
        units, background subtracted), ``bkg`` (per pixel), ``bkg_rms``,
        ``snr``, ``mag_inst`` and ``mag_inst_err`` (mag, from flux per second
        when ``EXPTIME`` is known), the booleans ``saturated``, ``edge``,
        ``masked`` (the aperture touches ``ccd.mask``), ``annulus_masked``
        (the background annulus does) and ``flags`` (`~astro_aeqa.flags.AEQAFlags` bits
        SATURATED, EDGE, INPUT_MASKED).

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
        if xy.ndim != 2 or xy.shape[1] != 2:
            msg = f"positions must have shape (N, 2) as (x, y) pairs, got {xy.shape}"
            raise InputDataError(msg)
    fwhm_pix = _fwhm_pixels(ccd, fwhm)
    r = 1.5 * fwhm_pix if radius is None else to_pixels(radius, ccd.wcs, "radius")
    r_in, r_out = (3.0 * fwhm_pix, 5.0 * fwhm_pix) if annulus is None else map(float, annulus)
    if not 0 < r <= r_in < r_out:
        msg = f"need 0 < radius <= annulus inner < annulus outer, got {r}, {r_in}, {r_out}"
        raise ValueError(msg)
    meta = ccd.meta
    gain = meta_float(meta, ("GAIN", "EGAIN"), 1.0) if gain is None else float(gain)
    if ccd.unit is not None and ccd.unit.is_equivalent(u.electron):
        gain = 1.0
    read_noise = (
        meta_float(meta, ("RDNOISE", "READNOIS", "RON"), 0.0)
        if read_noise is None
        else float(read_noise)
    )
    saturation = (
        meta_float(meta, ("SATURATE", "SATLEVEL"), None) if saturation is None else saturation
    )
    exptime = meta_float(meta, ("EXPTIME", "EXPOSURE"), 1.0)
    data = np.asarray(ccd.data, float)
    ny, nx = data.shape
    table = QTable()
    table["x"] = xy[:, 0]
    table["y"] = xy[:, 1]
    n = len(xy)
    if n == 0:
        for col in ("flux", "flux_err", "bkg", "bkg_rms", "snr", "mag_inst", "mag_inst_err"):
            table[col] = np.zeros(0)
        for col in ("saturated", "edge", "masked", "annulus_masked"):
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
    bkg = np.where(np.isfinite(bkg), bkg, np.nan)
    unc = error_array(ccd)
    if unc is None:
        # CCD noise model in adu: Poisson of the source plus the measured sky RMS
        # (which holds sky Poisson and read noise); read noise alone is a floor.
        sky_var = (
            np.nanmedian(bkg_rms) ** 2 if np.isfinite(bkg_rms).any() else (read_noise / gain) ** 2
        )
        floor = max(sky_var, (read_noise / gain) ** 2)
        var = np.clip(data - np.nanmedian(bkg), 0, None) / gain + floor
        unc = np.sqrt(var)
    phot = aperture_photometry(
        np.where(nonfinite, 0.0, data), aper, error=np.where(nonfinite, 0.0, unc), mask=nonfinite
    )
    raw = np.asarray(phot["aperture_sum"], float)
    raw_err = np.asarray(phot["aperture_sum_err"], float)
    area = np.asarray(aper.area_overlap(data, mask=nonfinite), float)
    flux = raw - bkg * area
    with np.errstate(divide="ignore", invalid="ignore"):
        flux_err = np.sqrt(raw_err**2 + area**2 * bkg_rms**2 / np.maximum(n_ann, 1))
        snr = flux / flux_err
        mag = -2.5 * np.log10(flux / exptime)
        mag_err = 2.5 / np.log(10) / snr
    mag = np.where(flux > 0, mag, np.nan)
    mag_err = np.where(flux > 0, mag_err, np.nan)
    # flags
    edge = (
        (xy[:, 0] - r_out < -0.5)
        | (xy[:, 0] + r_out > nx - 0.5)
        | (xy[:, 1] - r_out < -0.5)
        | (xy[:, 1] + r_out > ny - 0.5)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        peak = np.asarray(ApertureStats(data, aper, mask=nonfinite).max, float)
    saturated = np.zeros(n, bool) if saturation is None else (peak >= saturation)
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
    ).astype(np.uint16)
    unit = ccd.unit if ccd.unit is not None else u.adu
    table["flux"] = flux * unit
    table["flux_err"] = flux_err * unit
    table["bkg"] = bkg * unit
    table["bkg_rms"] = bkg_rms * unit
    table["snr"] = snr
    table["mag_inst"] = mag * u.mag
    table["mag_inst_err"] = mag_err * u.mag
    table["saturated"] = saturated
    table["edge"] = edge
    table["masked"] = masked
    table["annulus_masked"] = annulus_masked
    table["flags"] = flags
    table.meta.update(
        {
            "radius": r,
            "annulus": (r_in, r_out),
            "gain": gain,
            "read_noise": read_noise,
            "exptime": exptime,
        }
    )
    return table
