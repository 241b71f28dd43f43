# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Sky cross-match and photometric zero point."""

import logging
from dataclasses import dataclass, field

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.stats import SigmaClip, mad_std
from astropy.table import QTable

from ..exceptions import CatalogError

__all__ = ["crossmatch", "fit_zero_point", "ZeroPointFit", "CURVES"]

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


#: Characteristic curves of `fit_zero_point`, simplest first: a pure offset (a
#: linear CCD), a slope, polynomials of degree 2 and 3 in the instrumental
#: magnitude, and a cubic smoothing spline (photographic plates).
CURVES = ("offset", "linear", "poly2", "poly3", "spline")

_N_PARAMS = {"offset": 1, "linear": 2, "poly2": 3, "poly3": 4, "spline": 6}

#: A curve with ``p`` parameters is tried on at least ``_STARS_PER_PARAM * p`` stars.
_STARS_PER_PARAM = 10


@dataclass
class ZeroPointFit:
    """
    Result of `fit_zero_point`: ``mag_cat = f(mag_inst) + color_term * color``.

    ``f`` is the characteristic curve ``curve`` (see ``CURVES``): for
    ``"offset"`` ``f(m) = m + zero_point``, for ``"linear"``
    ``f(m) = slope * m + zero_point``; polynomials and splines are kept in
    ``model`` and continued linearly outside the fitted magnitude range.

    Attributes
    ----------
    zero_point : float
        In mag; for a polynomial or spline curve the median of ``f(m) - m``
        over the stars kept.
    color_term : float
        Coefficient of the colour (0 when no colour term was fitted).
    scatter : float
        Robust standard deviation (`~astropy.stats.mad_std`, mag) of the
        residuals of the stars kept.
    n_used : int
        Stars kept after sigma clipping.
    used : numpy.ndarray
        Boolean, per input star, True where kept.
    slope : float
        ``df/dm``: 1 for an offset, the fitted slope for ``"linear"``, the
        median slope over the stars kept for a curve.
    curve : str
        The characteristic curve, one of ``CURVES``.
    zero_point_err : float
        Standard error of the calibration at a typical star (mag):
        ``scatter * sqrt(n_parameters / n_used)``.
    cv_scatter : dict
        With ``curve="auto"``: the cross-validated robust scatter (mag) of
        each curve tried.
    model : tuple or None
        ``(f, dfdm, (m_min, m_max))`` for polynomial and spline curves.
    """

    zero_point: float
    color_term: float = 0.0
    scatter: float = np.nan
    n_used: int = 0
    used: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    slope: float = 1.0
    curve: str = "offset"
    zero_point_err: float = np.nan
    cv_scatter: dict = field(default_factory=dict)
    model: object = field(default=None, repr=False)

    def _curve(self, m):
        if self.model is None:
            return self.slope * m + self.zero_point
        f, df, (lo, hi) = self.model
        inside = f(np.clip(np.nan_to_num(m, nan=lo), lo, hi))
        out = np.where(m < lo, f(lo) + df(lo) * (m - lo), inside)
        out = np.where(m > hi, f(hi) + df(hi) * (m - hi), out)
        return np.where(np.isfinite(m), out, np.nan)

    def apply(self, mag_inst, color=None):
        """Return the calibrated magnitudes of ``mag_inst`` (and ``color``)."""
        mag = self._curve(_value(mag_inst))
        if self.color_term and color is not None:
            mag = mag + self.color_term * np.nan_to_num(_value(color))
        return mag

    def derivative(self, mag_inst):
        """Return ``d mag_cal / d mag_inst`` at ``mag_inst``: scales instrumental errors."""
        m = _value(mag_inst)
        if self.model is None:
            return np.full(m.shape, float(self.slope))
        _, df, (lo, hi) = self.model
        return np.asarray(df(np.clip(np.nan_to_num(m, nan=lo), lo, hi)), float)


def _value(x):
    return np.asarray(x.to_value(u.mag) if isinstance(x, u.Quantity) else x, float)


def _design(kind, m, centre, scale):
    x = (m - centre) / scale
    degree = {"offset": 0, "linear": 1, "poly2": 2, "poly3": 3}[kind]
    return np.column_stack([x**k for k in range(degree + 1)])


def _fit_once(kind, m, y, col, w):
    """Fit curve ``kind`` to ``y`` (catalogue mags) against ``m``; return ``(f, df, cterm)``."""
    centre = float(np.median(m))
    scale = float(np.ptp(m)) / 2 or 1.0
    if kind == "offset" and col is None:
        zp = float(np.median(y - m))
        return (lambda v: v + zp), (lambda v: np.ones_like(np.asarray(v, float))), 0.0
    if kind == "spline":
        from scipy.interpolate import make_smoothing_spline

        cterm = 0.0
        if col is not None:  # the colour term of a cubic, then the spline of the rest
            *_, cterm = _fit_once("poly3", m, y, col, w)
        order = np.argsort(m, kind="stable")
        ms, ys, ws = m[order], (y - cterm * (col if col is not None else 0.0))[order], w[order]
        keep = np.r_[True, np.diff(ms) > 1e-9]  # strictly increasing abscissae
        spl = make_smoothing_spline(ms[keep], ys[keep], w=ws[keep])
        dspl = spl.derivative()
        return (lambda v: spl(v)), (lambda v: dspl(v)), float(cterm)
    design = _design(kind, m, centre, scale)
    if kind == "offset":
        design = np.ones((m.size, 1))
        target = y - m
    else:
        target = y
    if col is not None:
        design = np.column_stack([design, col])
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(design * sw[:, None], target * sw, rcond=None)
    cterm = float(coef[-1]) if col is not None else 0.0
    poly = coef[:-1] if col is not None else coef
    if kind == "offset":
        zp = float(poly[0])
        return (lambda v: v + zp), (lambda v: np.ones_like(np.asarray(v, float))), cterm
    poly = np.asarray(poly, float)
    powers = np.arange(poly.size)

    def f(v):
        x = (np.asarray(v, float) - centre) / scale
        return np.sum(poly * x[..., None] ** powers, axis=-1)

    def df(v):
        x = (np.asarray(v, float) - centre) / scale
        return np.sum(poly[1:] * powers[1:] * x[..., None] ** (powers[1:] - 1), axis=-1) / scale

    return f, df, cterm


def _robust_fit(kind, m, y, col, w, ok, sigma, maxiters, min_stars):
    """Sigma-clipped fit of curve ``kind`` on the stars ``ok``; return ``(f, df, cterm, used)``."""
    # each round clips the residuals of the refitted curve: the bounds come from the
    # stars in use and are applied to all the usable ones (a clipped star may return)
    clip = SigmaClip(
        sigma=sigma,
        maxiters=1,
        cenfunc="median",
        stdfunc=lambda r, axis=None: max(mad_std(r), 1e-6),
    )
    used = ok.copy()
    for _ in range((maxiters if maxiters else 0) + 1):
        f, df, cterm = _fit_once(
            kind, m[used], y[used], col[used] if col is not None else None, w[used]
        )
        resid = y - f(m) - (cterm * np.nan_to_num(col) if col is not None else 0.0)
        _, lower, upper = clip(resid[used], masked=False, return_bounds=True)
        new_used = ok & (resid >= lower) & (resid <= upper)
        if new_used.sum() < min_stars or np.array_equal(new_used, used):
            break
        used = new_used
    return f, df, cterm, used


def _cv_scatter(kind, m, y, col, w, ok, sigma, maxiters, n_folds, seed):
    """Robust scatter of the residuals of held-out stars (``n_folds``-fold cross-validation)."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(np.flatnonzero(ok))
    resid = []
    for fold in np.array_split(idx, n_folds):
        train = ok.copy()
        train[fold] = False
        try:
            f, _, cterm, _ = _robust_fit(kind, m, y, col, w, train, sigma, maxiters, 3)
        except (ValueError, np.linalg.LinAlgError):
            return np.inf
        pred = f(m[fold]) + (cterm * np.nan_to_num(col[fold]) if col is not None else 0.0)
        resid.append(y[fold] - pred)
    resid = np.concatenate(resid)
    return float(mad_std(resid[np.isfinite(resid)])) if resid.size else np.inf


def fit_zero_point(
    mag_inst,
    mag_cat,
    *,
    color=None,
    weights=None,
    sigma=3.0,
    maxiters=5,
    min_stars=3,
    slope=False,
    curve=None,
    n_folds=5,
    tolerance=0.1,
    min_gain=0.01,
    seed=0,
):
    """
    Fit a sigma-clipped zero point or characteristic curve, with an optional colour term.

    A linear CCD needs only a zero point: ``mag_cat = mag_inst + zp``. A
    photographic plate (or a detector near saturation) does not: its
    characteristic curve bends the calibrated magnitude by tenths of a
    magnitude over the range of the stars. ``curve="auto"`` chooses among
    ``CURVES`` by ``n_folds``-fold cross-validation: the robust scatter of
    the held-out residuals is computed for each curve that has at least 10
    stars per parameter, and the simplest curve whose scatter is within
    ``tolerance`` (relative) plus ``min_gain`` (mag) of the best one wins:
    a more complex curve must earn its parameters, so a CCD keeps its
    offset and a plate gets its curve.

    Parameters
    ----------
    mag_inst, mag_cat : array-like or `~astropy.units.Quantity`
        Instrumental and catalogue magnitudes of matched stars.
    color : array-like or None, optional
        Colour (BP-RP); when given, a colour term is fitted with the curve.
    weights : array-like or None, optional
        Weights (e.g. inverse variances) for the least-squares fits.
    sigma : float, optional
        Clipping threshold in robust standard deviations.
    maxiters : int, optional
        Clipping iterations.
    min_stars : int, optional
        Fewest usable stars.
    slope : bool, optional
        Same as ``curve="linear"`` (kept for compatibility).
    curve : {"auto", "offset", "linear", "poly2", "poly3", "spline"} or None, optional
        The characteristic curve; None means ``"linear"`` if ``slope`` else
        ``"offset"``, a pure offset as for a linear CCD.
    n_folds : int, optional
        Folds of the cross-validation of ``curve="auto"``.
    tolerance, min_gain : float, optional
        Relative and absolute (mag) margins by which a more complex curve
        must beat a simpler one in the cross-validation.
    seed : int, optional
        Seed of the fold assignment.

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
    >>> round(fit.zero_point, 3), fit.n_used, fit.curve
    (25.0, 4, 'offset')
    """
    inst = _value(mag_inst)
    cat = _value(mag_cat)
    if inst.shape != cat.shape:
        msg = f"mag_inst and mag_cat must have the same length, got {inst.shape} and {cat.shape}"
        raise ValueError(msg)
    if curve is None:
        curve = "linear" if slope else "offset"
    if curve != "auto" and curve not in CURVES:
        msg = f"curve must be 'auto' or one of {', '.join(CURVES)}, got {curve!r}"
        raise ValueError(msg)
    ok = np.isfinite(cat - inst)
    col = None
    if color is not None:
        col = _value(color)
        ok &= np.isfinite(col)
    w = np.ones_like(inst) if weights is None else np.asarray(weights, float)
    ok &= np.isfinite(w) & (w > 0)
    n_ok = int(ok.sum())
    if n_ok < min_stars:
        msg = (
            f"only {n_ok} stars with finite magnitudes for the zero point (need "
            f"{min_stars}); check the WCS, the match radius and the catalogue magnitude range"
        )
        raise CatalogError(msg)
    cv = {}
    if curve == "auto":
        candidates = [c for c in CURVES if n_ok >= _STARS_PER_PARAM * _N_PARAMS[c]] or ["offset"]
        if len(candidates) > 1:
            cv = {
                c: _cv_scatter(c, inst, cat, col, w, ok, sigma, maxiters, n_folds, seed)
                for c in candidates
            }
            best = min(cv.values())
            curve = next(c for c in candidates if cv[c] <= best * (1 + tolerance) + min_gain)
        else:
            curve = "offset"
        log.debug("characteristic curve %s chosen by cross-validation: %s", curve, cv)
    f, df, cterm, used = _robust_fit(curve, inst, cat, col, w, ok, sigma, maxiters, min_stars)
    resid = cat - f(inst) - (cterm * np.nan_to_num(col) if col is not None else 0.0)
    scatter = float(mad_std(resid[used])) if used.any() else np.nan
    n_used = int(used.sum())
    if curve in ("offset", "linear"):
        slp = float(np.median(df(inst[used]))) if curve == "linear" else 1.0
        zp = float(np.median(f(inst[used]) - slp * inst[used]))
        model = None
    else:
        zp = float(np.median(f(inst[used]) - inst[used]))
        slp = float(np.median(df(inst[used])))
        model = (f, df, (float(inst[used].min()), float(inst[used].max())))
    return ZeroPointFit(
        zero_point=zp,
        color_term=cterm,
        scatter=scatter,
        n_used=n_used,
        used=used,
        slope=slp,
        curve=curve,
        zero_point_err=float(scatter * np.sqrt(_N_PARAMS[curve] / max(n_used, 1))),
        cv_scatter=cv,
        model=model,
    )
