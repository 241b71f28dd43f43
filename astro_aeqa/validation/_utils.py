# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Private helpers of `astro_aeqa.validation`: input unpacking and meta look-ups."""

import logging
import warnings

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from ..exceptions import InputDataError

__all__ = []

log = logging.getLogger(__name__)


def frame_epoch(ccd):
    """Return the observation epoch of ``ccd`` as a `~astropy.time.Time`, or None if unknown."""
    wcs = getattr(ccd, "wcs", None)
    mjd = getattr(getattr(wcs, "wcs", None), "mjdobs", np.nan) if wcs is not None else np.nan
    if mjd is not None and np.isfinite(mjd):
        return Time(mjd, format="mjd", scale="tt")
    meta = getattr(ccd, "meta", {}) or {}
    for key in ("DATE-OBS", "DATE_OBS", "MJD-OBS"):
        value = meta.get(key)
        if value in (None, ""):
            continue
        try:
            if key == "MJD-OBS":
                return Time(float(value), format="mjd", scale="tt")
            return _parse_date(value)
        except ValueError:
            continue
    log.warning("no usable DATE-OBS or MJD-OBS: catalogue positions stay at their own epoch")
    return None


def _parse_date(value):
    """Parse a DATE-OBS: ISO, or the pre-2000 FITS form 'dd/mm/yy' (19yy).

    The scale is taken as TT: an epoch for proper motions needs no better than
    a minute, and UTC before 1960 (old plates) is undefined in ERFA.
    """
    text = str(value).strip()
    parts = text.split("/")
    if len(parts) == 3 and all(p.strip().isdigit() for p in parts):
        day, month, year = (int(p) for p in parts)
        return Time(f"{1900 + year if year < 100 else year:04d}-{month:02d}-{day:02d}", scale="tt")
    return Time(text, scale="tt")


def as_ccd(image, *, hdu=None, name="image"):
    """Return ``image`` as a `~astropy.nddata.CCDData` (paths go through `astro_aeqa.io`)."""
    if isinstance(image, CCDData):
        return image
    if isinstance(image, NDData):
        return CCDData(
            image.data,
            unit=image.unit or "adu",
            mask=image.mask,
            wcs=image.wcs,
            uncertainty=image.uncertainty,
            meta=dict(image.meta),
        )
    try:
        from ..io import read_image
    except ImportError:  # io not built yet: a plain FITS reader
        read_image = None
    if read_image is not None:
        return read_image(image, hdu=hdu)
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                return CCDData.read(image, hdu=hdu or 0, unit="adu")
        except OSError as exc:
            msg = f"cannot read {name} {image!r}: {exc}"
            raise InputDataError(msg) from exc
    msg = f"{name} must be a CCDData, an NDData or a FITS path, got {type(image).__name__}"
    raise TypeError(msg)


def celestial_wcs(ccd, name="image"):
    """Return the celestial WCS of ``ccd`` or raise `InputDataError` naming the fix."""
    wcs = getattr(ccd, "wcs", None)
    if wcs is None or not isinstance(wcs, WCS) or not wcs.has_celestial:
        msg = (
            f"{name} has no celestial WCS, so its stars cannot be matched to a catalogue; "
            "solve the astrometry first (for example with astrometry.net) and write the WCS "
            "keywords into the FITS header"
        )
        raise InputDataError(msg)
    return wcs.celestial


def pixel_scale(wcs):
    """Return the mean pixel scale of a celestial WCS as an angle Quantity."""
    scales = proj_plane_pixel_scales(wcs.celestial)
    unit = u.Unit(wcs.celestial.wcs.cunit[0] or "deg")
    return (float(np.mean(scales)) * unit).to(u.arcsec)


def to_pixels(value, wcs, name):
    """Return a length given in pixels (number or pixel Quantity) or as an angle, in pixels."""
    if isinstance(value, u.Quantity):
        if value.unit.physical_type == "angle":
            if wcs is None:
                msg = f"{name} given as an angle needs a WCS; give it in pixels instead"
                raise InputDataError(msg)
            return float((value / pixel_scale(wcs)).to_value(u.dimensionless_unscaled))
        return float(value.to_value(u.pix))
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        msg = f"{name} must be positive, got {value}"
        raise ValueError(msg)
    return value


def meta_float(meta, keys, default=None):
    """Return the first finite float among ``meta[keys]``, else ``default``."""
    for key in keys:
        if key in meta:
            try:
                value = float(meta[key])
            except (TypeError, ValueError):
                continue
            if np.isfinite(value):
                return value
    return default


def error_array(ccd):
    """Return the 1-sigma uncertainty array of ``ccd`` in data units, or None."""
    unc = ccd.uncertainty
    if unc is None:
        return None
    if not isinstance(unc, StdDevUncertainty):
        unc = unc.represent_as(StdDevUncertainty)
    return np.asarray(unc.array, float)
