# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Telescope and camera parameters of the simulator."""

import dataclasses

import numpy as np
from astropy import units as u

from ..utils import check_positive_quantity

__all__ = ["Instrument", "PAPER_2P5M", "GWAC_LIKE"]

_SB_UNIT = u.mag / u.arcsec**2


def _as_quantity(value, unit, name, *, allow_zero=False):
    if isinstance(value, u.Quantity) and u.Unit(unit) == u.arcsec / u.pix:
        # accept arcsec for a pixel scale
        if value.unit.is_equivalent(u.arcsec):
            value = value.to(u.arcsec).value * (u.arcsec / u.pix)
    return check_positive_quantity(value, name, unit, allow_zero=allow_zero)


def _check_mag(value, name, unit):
    if not isinstance(value, u.Quantity):
        msg = (
            f"{name} must be a Quantity in {u.Unit(unit)} "
            f"(for example {name}=20.0 * u.{u.Unit(unit)}), got {value!r}"
        )
        raise TypeError(msg)
    try:
        value = value.to(unit)
    except u.UnitConversionError as exc:
        msg = f"{name} must have units of {u.Unit(unit)}, got {value.unit}"
        raise u.UnitsError(msg) from exc
    if not np.isfinite(value.value):
        msg = f"{name} must be finite, got {value}"
        raise ValueError(msg)
    return value


@dataclasses.dataclass(frozen=True)
class Instrument:
    """
    A telescope and its camera, as the simulator sees them.

    Every physical parameter is a `~astropy.units.Quantity`, checked by its
    physical type when the object is made. Use :meth:`replace` to vary one
    field of a preset.

    Parameters
    ----------
    name : str
        A short label, written to the ``INSTRUME`` keyword.
    aperture : `~astropy.units.Quantity`
        Diameter of the entrance pupil (length).
    pixel_scale : `~astropy.units.Quantity`
        Angular size of one pixel, in arcsec/pix (arcsec is accepted).
    zero_point : `~astropy.units.Quantity`
        The magnitude (``u.mag``) of a source that gives 1 electron per
        second in the detector, through the whole system.
    sky_brightness : `~astropy.units.Quantity`
        Dark-sky surface brightness, in ``u.mag / u.arcsec**2``.
    exposure_time : `~astropy.units.Quantity`
        Exposure time (time).
    gain : `~astropy.units.Quantity`
        Electrons per ADU (``u.electron / u.adu``).
    read_noise : `~astropy.units.Quantity`
        Read noise in electrons (``u.electron``).
    dark_current : `~astropy.units.Quantity`
        Dark current in ``u.electron / u.s``.
    bias : `~astropy.units.Quantity`
        Bias level in ``u.adu``.
    saturation : `~astropy.units.Quantity`
        The largest value a pixel can hold, in ``u.adu`` (bias included).
    band : str
        Photometric band name, written to the ``FILTER`` keyword.
    typical_fwhm : `~astropy.units.Quantity`
        Seeing FWHM (angle) used when the simulator is given ``fwhm=None``.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astro_aeqa.simulation import PAPER_2P5M
    >>> longer = PAPER_2P5M.replace(exposure_time=120 * u.s)
    >>> longer.exposure_time
    <Quantity 120. s>
    >>> round(PAPER_2P5M.sky_electrons_per_pixel(), 1)
    308.4
    """

    name: str
    aperture: u.Quantity
    pixel_scale: u.Quantity
    zero_point: u.Quantity
    sky_brightness: u.Quantity
    exposure_time: u.Quantity
    gain: u.Quantity
    read_noise: u.Quantity
    dark_current: u.Quantity
    bias: u.Quantity
    saturation: u.Quantity
    band: str = "V"
    typical_fwhm: u.Quantity = 1.0 * u.arcsec

    def __post_init__(self):
        checks = {
            "aperture": (u.m, False),
            "pixel_scale": (u.arcsec / u.pix, False),
            "exposure_time": (u.s, False),
            "gain": (u.electron / u.adu, False),
            "read_noise": (u.electron, True),
            "dark_current": (u.electron / u.s, True),
            "bias": (u.adu, True),
            "saturation": (u.adu, False),
            "typical_fwhm": (u.arcsec, False),
        }
        for field, (unit, allow_zero) in checks.items():
            value = _as_quantity(getattr(self, field), unit, field, allow_zero=allow_zero)
            object.__setattr__(self, field, value)
        object.__setattr__(self, "zero_point", _check_mag(self.zero_point, "zero_point", u.mag))
        object.__setattr__(
            self, "sky_brightness", _check_mag(self.sky_brightness, "sky_brightness", _SB_UNIT)
        )
        if self.saturation <= self.bias:
            msg = f"saturation ({self.saturation}) must be above bias ({self.bias})"
            raise ValueError(msg)
        if not isinstance(self.name, str) or not isinstance(self.band, str):
            msg = "name and band must be strings"
            raise TypeError(msg)

    def replace(self, **changes):
        """
        Return a copy with some fields changed (``dataclasses.replace``).

        Parameters
        ----------
        **changes
            Field names and their new values.

        Returns
        -------
        instrument : `Instrument`
            The new, checked instrument.
        """
        return dataclasses.replace(self, **changes)

    @property
    def pixel_area(self):
        """Solid angle of one pixel, in arcsec**2."""
        scale = self.pixel_scale.to_value(u.arcsec / u.pix)
        return scale**2 * u.arcsec**2

    def electron_rate(self, mag):
        """
        Return the electron rate (e-/s) of a source of magnitude ``mag``.

        Parameters
        ----------
        mag : float or array-like
            Magnitudes in the instrument band.

        Returns
        -------
        rate : `~numpy.ndarray` or float
            Electrons per second.
        """
        return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - self.zero_point.value))

    def sky_electrons_per_pixel(self):
        """Return the sky electrons one pixel collects in one exposure (float)."""
        rate = self.electron_rate(self.sky_brightness.value) * self.pixel_area.to_value(u.arcsec**2)
        return float(rate * self.exposure_time.to_value(u.s))

    def to_meta(self):
        """Return the parameters as FITS-safe keywords (a dict of (value, comment))."""
        return {
            "INSTRUME": (self.name, "simulated instrument"),
            "FILTER": (self.band, "band"),
            "APERTURE": (self.aperture.to_value(u.m), "[m] aperture diameter"),
            "PIXSCALE": (self.pixel_scale.to_value(u.arcsec / u.pix), "[arcsec/pix] pixel scale"),
            "MAGZP": (self.zero_point.value, "[mag] magnitude giving 1 e-/s"),
            "SKYMAG": (self.sky_brightness.value, "[mag/arcsec2] sky brightness"),
            "EXPTIME": (self.exposure_time.to_value(u.s), "[s] exposure time"),
            "GAIN": (self.gain.to_value(u.electron / u.adu), "[e-/adu] gain"),
            "RDNOISE": (self.read_noise.to_value(u.electron), "[e-] read noise"),
            "DARKCUR": (self.dark_current.to_value(u.electron / u.s), "[e-/s] dark current"),
            "BIASLEV": (self.bias.to_value(u.adu), "[adu] bias level"),
            "SATURATE": (self.saturation.to_value(u.adu), "[adu] saturation level"),
        }


PAPER_2P5M = Instrument(
    name="PAPER_2P5M",
    aperture=2.5 * u.m,
    pixel_scale=0.2267 * u.arcsec / u.pix,
    zero_point=25.0 * u.mag,
    sky_brightness=20.0 * u.mag / u.arcsec**2,
    exposure_time=60 * u.s,
    gain=1.5 * u.electron / u.adu,
    read_noise=2.0 * u.electron,
    dark_current=1.0 * u.electron / u.s,
    bias=500 * u.adu,
    saturation=65535 * u.adu,
    band="V",
    typical_fwhm=0.7 * u.arcsec,
)

GWAC_LIKE = Instrument(
    name="GWAC_LIKE",
    aperture=0.18 * u.m,
    pixel_scale=11.7 * u.arcsec / u.pix,
    zero_point=20.9 * u.mag,
    sky_brightness=20.5 * u.mag / u.arcsec**2,
    exposure_time=10 * u.s,
    gain=1.7 * u.electron / u.adu,
    read_noise=12.0 * u.electron,
    dark_current=0.5 * u.electron / u.s,
    bias=1000 * u.adu,
    saturation=65535 * u.adu,
    band="R",
    typical_fwhm=23.0 * u.arcsec,
)
