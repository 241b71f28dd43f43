# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Argument checks that name the argument, the problem and the fix."""

import numpy as np
from astropy import units as u

__all__ = [
    "check_positive_quantity",
    "check_fraction",
    "check_int",
    "check_2d_float",
    "forwarded_property",
]


def check_positive_quantity(value, name, unit, *, allow_zero=False):
    """
    Return ``value`` converted to ``unit``, checking its physical type.

    Raises
    ------
    TypeError
        If ``value`` is not a `~astropy.units.Quantity`.
    astropy.units.UnitsError
        If its unit is not convertible to ``unit``.
    ValueError
        If it is not finite and positive (or zero, with ``allow_zero``).
    """
    unit = u.Unit(unit)
    if not isinstance(value, u.Quantity):
        msg = f"{name} must be a Quantity in units of {unit} (for example {name}=1.0 * u.{unit}), got {value!r}"
        raise TypeError(msg)
    try:
        converted = value.to(unit)
    except u.UnitConversionError as exc:
        msg = f"{name} must have units convertible to {unit}, got {value.unit}"
        raise u.UnitsError(msg) from exc
    arr = np.asarray(converted.value)
    bad = ~np.isfinite(arr) | ((arr < 0) if allow_zero else (arr <= 0))
    if np.any(bad):
        what = "zero or positive" if allow_zero else "positive"
        msg = f"{name} must be finite and {what}, got {value}"
        raise ValueError(msg)
    return converted


def check_fraction(value, name):
    """Return ``value`` as a float, checking that it lies in [0, 1]."""
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        msg = f"{name} must be a number in [0, 1], got {value!r}"
        raise TypeError(msg) from exc
    if not 0.0 <= value <= 1.0:
        msg = f"{name} must lie in [0, 1], got {value}"
        raise ValueError(msg)
    return value


def check_int(value, name, *, minimum):
    """
    Return ``value`` as an int, checking that it is an integer of at least ``minimum``.

    Raises
    ------
    TypeError
        If ``value`` is not an integer (a bool is not one).
    ValueError
        If it is less than ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"{name} must be an integer, got {value!r}"
        raise TypeError(msg)
    if value < minimum:
        msg = f"{name} must be at least {minimum}, got {value}"
        raise ValueError(msg)
    return int(value)


def check_2d_float(data, name="data"):
    """
    Return ``data`` as a 2-D float32 array (a copy when a cast is needed).

    Raises
    ------
    ValueError
        If the array is not 2-D or not numeric.
    """
    arr = np.asanyarray(data)
    if arr.ndim != 2:
        msg = f"{name} must be a 2-D image, got an array of shape {arr.shape}; select one plane or HDU"
        raise ValueError(msg)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        msg = f"{name} must be numeric, got dtype {arr.dtype}"
        raise TypeError(msg)
    return np.asarray(arr, dtype=np.float32)


def forwarded_property(owner, name, doc, settable=True):
    """
    A property that reads (and, if ``settable``, sets) attribute ``name`` of
    the object held in attribute ``owner``; an owner with a ``replace``
    method (a frozen dataclass) is replaced by its changed copy.
    """

    def get(self):
        return getattr(getattr(self, owner), name)

    def set_(self, value):
        held = getattr(self, owner)
        if hasattr(held, "replace"):
            setattr(self, owner, held.replace(**{name: value}))
        else:
            setattr(held, name, value)

    return property(get, set_ if settable else None, doc=doc)
