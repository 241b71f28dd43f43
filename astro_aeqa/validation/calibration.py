# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Sky cross-match and photometric zero point."""

import logging
from dataclasses import dataclass, field

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.stats import sigma_clip
from astropy.table import QTable

from ..exceptions import CatalogError

__all__ = ["crossmatch", "fit_zero_point", "ZeroPointFit"]

log = logging.getLogger(__name__)


def _coords(table_or_coord, name):
    if isinstance(table_or_coord, SkyCoord):
        return table_or_coord
    cols = getattr(table_or_coord, "colnames", ())
    if "ra" not in cols or "dec" not in cols:
        msg = f"{name} needs 'ra' and 'dec' columns (or be a SkyCoord); it has {list(cols)}"
        raise CatalogError(msg)
    ra, dec = table_or_coord["ra"], table_or_coord["dec"]
    ra = ra if isinstance(ra, u.Quantity) else np.asarray(ra, float) * u.deg
    dec = dec if isinstance(dec, u.Quantity) else np.asarray(dec, float) * u.deg
    return SkyCoord(ra, dec)


def crossmatch(sources, catalog, *, radius=1.0 * u.arcsec, reject_ambiguous=True):
    """
    Match sources to a catalogue on the sky, rejecting ambiguous pairs.

    A pair is kept when the catalogue star is the nearest one within
    ``radius``. With ``reject_ambiguous``, a source is dropped when a second
    catalogue star also lies within ``radius`` of it, and a catalogue star
    claimed by more than one source is dropped with all its claimants.

    Parameters
    ----------
    sources, catalog : `~astropy.table.Table` or `~astropy.coordinates.SkyCoord`
        Tables with ``ra`` and ``dec`` (deg).
    radius : `~astropy.units.Quantity`, optional
        Match radius (angle).
    reject_ambiguous : bool, optional
        Drop ambiguous matches (default True).

    Returns
    -------
    matches : `~astropy.table.QTable`
        ``source_index``, ``catalog_index`` and ``separation`` (arcsec), one
        row per accepted pair.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.table import QTable
    >>> from astro_aeqa.validation import crossmatch
    >>> src = QTable({"ra": [10.0, 10.01] * u.deg, "dec": [0.0, 0.0] * u.deg})
    >>> cat = QTable({"ra": [10.0001, 10.02] * u.deg, "dec": [0.0, 0.0] * u.deg})
    >>> m = crossmatch(src, cat, radius=1 * u.arcsec)
    >>> m["source_index"].tolist(), m["catalog_index"].tolist()
    ([0], [0])
    """
    if not isinstance(radius, u.Quantity) or radius.unit.physical_type != "angle":
        msg = f"radius must be an angle Quantity (for example radius=1 * u.arcsec), got {radius!r}"
        raise TypeError(msg)
    src = _coords(sources, "sources")
    cat = _coords(catalog, "catalog")
    out = QTable(
        {
            "source_index": np.zeros(0, int),
            "catalog_index": np.zeros(0, int),
            "separation": np.zeros(0) * u.arcsec,
        }
    )
    if len(src) == 0 or len(cat) == 0:
        return out
    idx, sep, _ = src.match_to_catalog_sky(cat)
    keep = sep <= radius
    if reject_ambiguous and len(cat) > 1:
        _, sep2, _ = src.match_to_catalog_sky(cat, nthneighbor=2)
        keep &= ~(sep2 <= radius)
        claimed = np.bincount(idx[keep], minlength=len(cat))
        keep &= claimed[idx] == 1
    src_idx = np.flatnonzero(keep)
    out = QTable(
        {
            "source_index": src_idx,
            "catalog_index": np.asarray(idx[keep], int),
            "separation": sep[keep].to(u.arcsec),
        }
    )
    log.debug("crossmatch: %d of %d sources matched within %s", len(out), len(src), radius)
    return out


@dataclass
class ZeroPointFit:
    """
    Result of `fit_zero_point`: ``mag_cat = slope * mag_inst + zero_point + color_term * color``.

    Attributes
    ----------
    zero_point : float
        In mag.
    color_term : float
        Coefficient of the colour (0 when no colour term was fitted).
    slope : float
        Coefficient of ``mag_inst`` (1 unless a slope was fitted, for
        non-linear detectors such as photographic plates).
    scatter : float
        Standard deviation (mag) of the residuals of the stars kept.
    n_used : int
        Stars kept after sigma clipping.
    used : numpy.ndarray
        Boolean, per input star, True where kept.
    """

    zero_point: float
    color_term: float = 0.0
    scatter: float = np.nan
    n_used: int = 0
    used: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    slope: float = 1.0

    def apply(self, mag_inst, color=None):
        """Return the calibrated magnitudes of ``mag_inst`` (and ``color``)."""
        mag = self.slope * _value(mag_inst) + self.zero_point
        if self.color_term and color is not None:
            mag = mag + self.color_term * np.nan_to_num(_value(color))
        return mag


def _value(x):
    return np.asarray(x.to_value(u.mag) if isinstance(x, u.Quantity) else x, float)


def fit_zero_point(
    mag_inst, mag_cat, *, color=None, weights=None, sigma=3.0, maxiters=5, min_stars=3, slope=False
):
    """
    Fit a sigma-clipped zero point, with an optional colour term.

    Parameters
    ----------
    mag_inst, mag_cat : array-like or `~astropy.units.Quantity`
        Instrumental and catalogue magnitudes of matched stars.
    color : array-like or None, optional
        Colour (BP-RP); when given, ``mag_cat - mag_inst = zp + c * color``
        is fitted by clipped least squares, else ``zp`` is a clipped median.
    weights : array-like or None, optional
        Weights (e.g. inverse variances) for the colour or slope fit.
    sigma : float, optional
        Clipping threshold in standard deviations.
    min_stars : int, optional
        Fewest usable stars.
    slope : bool, optional
        Also fit the slope of ``mag_cat`` against ``mag_inst`` (for
        non-linear detectors, e.g. photographic plates); default False, a
        pure offset as for a linear CCD.

    Returns
    -------
    fit : `ZeroPointFit`

    Raises
    ------
    astro_aeqa.exceptions.CatalogError
        If fewer than ``min_stars`` stars have finite magnitudes.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa.validation import fit_zero_point
    >>> inst = np.array([-10.0, -9.0, -8.0, -7.0, -6.0])
    >>> fit = fit_zero_point(inst, inst + 25.0 + np.array([0, 0.01, -0.01, 0, 3.0]))
    >>> round(fit.zero_point, 3), fit.n_used
    (25.0, 4)
    """
    inst = _value(mag_inst)
    cat = _value(mag_cat)
    if inst.shape != cat.shape:
        msg = f"mag_inst and mag_cat must have the same length, got {inst.shape} and {cat.shape}"
        raise ValueError(msg)
    diff = cat - inst
    ok = np.isfinite(diff)
    col = None
    if color is not None:
        col = _value(color)
        ok &= np.isfinite(col)
    w = np.ones_like(diff) if weights is None else np.asarray(weights, float)
    ok &= np.isfinite(w) & (w > 0)
    if ok.sum() < min_stars:
        msg = (
            f"only {int(ok.sum())} stars with finite magnitudes for the zero point (need "
            f"{min_stars}); check the WCS, the match radius and the catalogue magnitude range"
        )
        raise CatalogError(msg)
    used = ok.copy()
    zp, cterm, slp = float(np.median(diff[ok])), 0.0, 1.0
    for _ in range((maxiters if maxiters else 0) + 1):
        if slope:
            cols = [np.ones(used.sum()), inst[used]] + ([col[used]] if col is not None else [])
            design = np.column_stack(cols)
            sw = np.sqrt(w[used])
            coef, *_ = np.linalg.lstsq(design * sw[:, None], cat[used] * sw, rcond=None)
            zp, slp = float(coef[0]), float(coef[1])
            cterm = float(coef[2]) if col is not None else 0.0
            resid = cat - zp - slp * inst - (cterm * np.nan_to_num(col) if col is not None else 0.0)
        elif col is None:
            clipped = sigma_clip(diff[used], sigma=sigma, maxiters=maxiters, stdfunc="mad_std")
            zp = float(np.ma.median(clipped))
            resid = diff - zp
        else:
            design = np.column_stack([np.ones(used.sum()), col[used]])
            sw = np.sqrt(w[used])
            coef, *_ = np.linalg.lstsq(design * sw[:, None], diff[used] * sw, rcond=None)
            zp, cterm = float(coef[0]), float(coef[1])
            resid = diff - zp - cterm * np.nan_to_num(col)
        centre = np.median(resid[used])
        scale = 1.4826 * np.median(np.abs(resid[used] - centre))
        new_used = ok & (np.abs(resid - centre) <= sigma * max(scale, 1e-6))
        if new_used.sum() < min_stars or np.array_equal(new_used, used):
            break
        used = new_used
    scatter = float(np.std(resid[used])) if used.any() else np.nan
    return ZeroPointFit(
        zero_point=zp,
        color_term=cterm,
        scatter=scatter,
        n_used=int(used.sum()),
        used=used,
        slope=slp,
    )
