# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Reference catalogues: local files with Gaia column names, and Gaia DR3 through astroquery.

astroquery is imported inside `query_gaia` only, so ``import astro_aeqa``
never needs it or the network.
"""

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import QTable, Table
from astropy.time import Time

from ..config import conf
from ..exceptions import AEQAWarning, CatalogError
from ..utils import atomic_write
from ._utils import celestial_wcs, frame_epoch

__all__ = [
    "REQUIRED_COLUMNS",
    "GAIA_COLUMNS",
    "load_catalog",
    "query_gaia",
    "propagate_epoch",
    "footprint",
]

log = logging.getLogger(__name__)

#: Columns every reference catalogue must have.
REQUIRED_COLUMNS = ("ra", "dec", "phot_g_mean_mag")

#: Columns asked from the Gaia archive (the rest of ``gaia_source`` is not needed).
GAIA_COLUMNS = (
    "source_id",
    "ra",
    "dec",
    "pmra",
    "pmdec",
    "ref_epoch",
    "phot_g_mean_mag",
    "phot_bp_mean_mag",
    "phot_rp_mean_mag",
    "bp_rp",
    "ruwe",
)

_FORMATS = {
    ".ecsv": "ascii.ecsv",
    ".csv": "ascii.csv",
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".fits.gz": "fits",
    ".vot": "votable",
    ".votable": "votable",
    ".xml": "votable",
}

#: Gaia DR3 reference epoch (Julian year), used when a catalogue has no ``ref_epoch``.
GAIA_DR3_EPOCH = 2016.0


def _format_of(path):
    name = path.name.lower()
    for ext in sorted(_FORMATS, key=len, reverse=True):
        if name.endswith(ext):
            return _FORMATS[ext]
    return None


def _standardise(table, source, *, required=REQUIRED_COLUMNS):
    """Return a QTable with lower-case Gaia names and units, checking ``required``."""
    table = QTable(table, copy=False)
    rename = {name: name.lower() for name in table.colnames if name != name.lower()}
    for old, new in rename.items():
        if new not in table.colnames:
            table.rename_column(old, new)
    missing = [c for c in required if c not in table.colnames]
    if missing:
        msg = (
            f"catalogue {source} lacks the column(s) {', '.join(missing)}; a reference catalogue "
            f"needs {', '.join(required)} (Gaia names; optional: pmra, pmdec, ref_epoch, bp_rp, "
            f"ruwe, source_id). It has: {', '.join(table.colnames[:20])}"
        )
        raise CatalogError(msg)
    for col, unit in (
        ("ra", u.deg),
        ("dec", u.deg),
        ("phot_g_mean_mag", u.mag),
        ("bp_rp", u.mag),
        ("phot_bp_mean_mag", u.mag),
        ("phot_rp_mean_mag", u.mag),
        ("pmra", u.mas / u.yr),
        ("pmdec", u.mas / u.yr),
    ):
        if col not in table.colnames:
            continue
        column = table[col]
        values = np.ma.filled(np.ma.asarray(getattr(column, "value", column), dtype=float), np.nan)
        if isinstance(column, u.Quantity) and column.unit not in (None, u.dimensionless_unscaled):
            try:
                values = column.to_value(unit)
            except u.UnitConversionError:
                # magnitudes stored as mag, Gaia archive sometimes labels them 'mag' variants
                values = np.asarray(column.value, float)
            values = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan)
        table[col] = np.asarray(values, float) * unit
    if "bp_rp" not in table.colnames and {"phot_bp_mean_mag", "phot_rp_mean_mag"} <= set(
        table.colnames
    ):
        table["bp_rp"] = table["phot_bp_mean_mag"] - table["phot_rp_mean_mag"]
    ok = np.isfinite(table["ra"].value) & np.isfinite(table["dec"].value)
    if not ok.all():
        table = table[ok]
    return table


def _cuts(table, *, g_range=None, ruwe_max=None):
    keep = np.ones(len(table), bool)
    g = table["phot_g_mean_mag"].to_value(u.mag)
    keep &= np.isfinite(g)
    if g_range is not None:
        lo, hi = g_range
        if lo is not None:
            keep &= g >= lo
        if hi is not None:
            keep &= g <= hi
    if ruwe_max is not None and "ruwe" in table.colnames:
        ruwe = np.asarray(np.ma.filled(np.ma.asarray(table["ruwe"], dtype=float), np.nan))
        keep &= ~(ruwe > ruwe_max)  # missing RUWE is kept
    return table[keep]


def _epoch_year(epoch):
    if epoch is None:
        return None
    if isinstance(epoch, Time):
        return float(epoch.jyear)
    if isinstance(epoch, str):
        return float(Time(epoch).jyear)
    return float(epoch)


def propagate_epoch(catalog, epoch):
    """
    Move catalogue positions from their reference epoch to ``epoch`` with the proper motions.

    Parameters
    ----------
    catalog : `~astropy.table.QTable`
        With ``ra``, ``dec`` and, if available, ``pmra`` (mu_alpha* = mu_alpha cos dec),
        ``pmdec`` (mas/yr) and ``ref_epoch`` (Julian year; default 2016.0, Gaia DR3).
        Rows with no proper motion stay where they are.
    epoch : `~astropy.time.Time`, str or float
        Target epoch (a ``DATE-OBS`` string, a Time, or a Julian year).

    Returns
    -------
    catalog : `~astropy.table.QTable`
        A copy with moved ``ra``/``dec`` and ``ref_epoch`` set to ``epoch``.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.table import QTable
    >>> from astro_aeqa.validation import propagate_epoch
    >>> cat = QTable({"ra": [10.0] * u.deg, "dec": [0.0] * u.deg, "phot_g_mean_mag": [12.0] * u.mag,
    ...               "pmra": [0.0] * u.mas / u.yr, "pmdec": [3600.0] * u.mas / u.yr})
    >>> moved = propagate_epoch(cat, 2026.0)
    >>> round(float((moved["dec"] - cat["dec"]).to_value(u.arcsec)[0]), 3)
    36.0
    """
    year = _epoch_year(epoch)
    out = catalog.copy()
    if year is None or "pmra" not in out.colnames or "pmdec" not in out.colnames:
        return out
    ref = (
        np.asarray(np.ma.filled(np.ma.asarray(out["ref_epoch"], dtype=float), GAIA_DR3_EPOCH))
        if "ref_epoch" in out.colnames
        else np.full(len(out), GAIA_DR3_EPOCH)
    )
    dt = year - ref
    pmra = np.nan_to_num(out["pmra"].to_value(u.mas / u.yr))
    pmdec = np.nan_to_num(out["pmdec"].to_value(u.mas / u.yr))
    dec = out["dec"].to_value(u.deg)
    cosd = np.cos(np.deg2rad(dec))
    new_dec = dec + pmdec * dt / 3.6e6
    new_ra = (
        out["ra"].to_value(u.deg) + pmra * dt / 3.6e6 / np.where(cosd > 1e-6, cosd, 1e-6)
    ) % 360.0
    out["ra"] = new_ra * u.deg
    out["dec"] = np.clip(new_dec, -90, 90) * u.deg
    out["ref_epoch"] = np.full(len(out), year)
    return out


def load_catalog(catalog, *, g_range=None, ruwe_max=None, epoch=None, required=REQUIRED_COLUMNS):
    """
    Read a reference catalogue with Gaia column names.

    Parameters
    ----------
    catalog : str, `~pathlib.Path` or `~astropy.table.Table`
        An ECSV, CSV, FITS or VOTable file, or a table (for example the
        truth catalogue ``sim.catalog`` of `astro_aeqa.simulation`). It must
        have ``ra``, ``dec`` (deg) and ``phot_g_mean_mag``; ``pmra``,
        ``pmdec``, ``ref_epoch``, ``bp_rp`` and ``ruwe`` are used when present.
    g_range : tuple or None, optional
        ``(faintest_bright, faint)`` G limits, ``(min, max)``; None keeps all.
    ruwe_max : float or None, optional
        Drop stars with ``ruwe`` above this value (when the column exists).
    epoch : `~astropy.time.Time`, str, float or None, optional
        Propagate positions to this epoch with `propagate_epoch`.

    Returns
    -------
    catalog : `~astropy.table.QTable`
        ``ra``/``dec`` in deg, magnitudes in mag, proper motions in mas/yr.

    Raises
    ------
    astro_aeqa.exceptions.CatalogError
        If the file is missing or unreadable, or a required column is missing.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.table import QTable
    >>> from astro_aeqa.validation import load_catalog
    >>> cat = load_catalog(QTable({"RA": [1.0, 2.0], "DEC": [3.0, 4.0],
    ...                            "phot_g_mean_mag": [12.0, 18.0]}), g_range=(None, 15))
    >>> len(cat), cat["ra"].unit
    (1, Unit("deg"))
    """
    if isinstance(catalog, Table):
        source = "table"
        table = catalog
    else:
        path = Path(os.fspath(catalog)).expanduser()
        source = str(path)
        if not path.is_file():
            msg = (
                f"catalogue file {path} does not exist; give an ECSV, CSV, FITS or VOTable file "
                "with Gaia column names (ra, dec, phot_g_mean_mag), or 'gaia' to query the archive"
            )
            raise CatalogError(msg)
        fmt = _format_of(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # unit parsing chatter of VOTable/FITS readers
                table = Table.read(path, format=fmt) if fmt else Table.read(path)
        except Exception as exc:  # astropy raises many kinds here
            msg = (
                f"cannot read catalogue file {path} ({exc}); use a file ending in .ecsv, .csv, "
                ".fits or .vot/.xml with Gaia column names"
            )
            raise CatalogError(msg) from exc
    table = _standardise(table, source, required=required)
    table = _cuts(table, g_range=g_range, ruwe_max=ruwe_max)
    if epoch is not None:
        table = propagate_epoch(table, epoch)
    log.debug("catalogue %s: %d rows after cuts", source, len(table))
    return table


def footprint(wcs, shape, *, margin=0.0 * u.arcmin):
    """
    Return ``(centre, radius)``: a circle on the sky that covers a frame.

    Parameters
    ----------
    wcs : `~astropy.wcs.WCS`
        Celestial WCS of the frame.
    shape : tuple
        ``(ny, nx)`` of the frame.
    margin : `~astropy.units.Quantity`, optional
        Added to the radius.

    Returns
    -------
    centre : `~astropy.coordinates.SkyCoord`
    radius : `~astropy.units.Quantity`
    """
    ny, nx = shape
    xs = np.array([-0.5, nx - 0.5, -0.5, nx - 0.5, (nx - 1) / 2])
    ys = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5, (ny - 1) / 2])
    ra, dec = wcs.celestial.pixel_to_world_values(xs, ys)
    corners = SkyCoord(ra[:4] * u.deg, dec[:4] * u.deg)
    centre = SkyCoord(ra[4] * u.deg, dec[4] * u.deg)
    radius = centre.separation(corners).max().to(u.deg) + margin
    return centre, radius


def _cache_dir(cache_dir):
    if cache_dir is None:
        cache_dir = conf.cache_dir
    if not cache_dir:
        from astropy.config import get_cache_dir

        cache_dir = Path(get_cache_dir()) / "astro_aeqa" / "catalogs"
    path = Path(cache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _adql(table, centre, radius, g_range, ruwe_max):
    where = [
        f"1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {centre.ra.deg:.8f}, "
        f"{centre.dec.deg:.8f}, {radius.to_value(u.deg):.8f}))"
    ]
    if g_range is not None:
        lo, hi = g_range
        if lo is not None:
            where.append(f"phot_g_mean_mag >= {float(lo):.4f}")
        if hi is not None:
            where.append(f"phot_g_mean_mag <= {float(hi):.4f}")
    if ruwe_max is not None:
        where.append(f"(ruwe IS NULL OR ruwe <= {float(ruwe_max):.4f})")
    return f"SELECT {', '.join(GAIA_COLUMNS)} FROM {table} WHERE " + " AND ".join(where)


def query_gaia(
    ccd,
    *,
    g_range=(None, None),
    ruwe_max=1.4,
    epoch="auto",
    margin=0.5 * u.arcmin,
    table=None,
    client=None,
    cache=True,
    cache_dir=None,
    name="image",
):
    """
    Query Gaia DR3 (``conf.gaia_table``) over the footprint of a frame.

    An asynchronous ADQL job asks only for ``GAIA_COLUMNS`` in a circle that
    covers the frame, with the magnitude and RUWE cuts done by the server.
    The query has no ``TOP`` and the client's ``ROW_LIMIT`` is set to -1,
    so no row is silently dropped. The result is cached on disk under a
    hash of the query, so a night of frames of one field queries once.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame; only its WCS, shape and ``DATE-OBS`` are used.
    g_range : tuple, optional
        ``(min, max)`` G magnitude; None for no limit.
    ruwe_max : float or None, optional
        Keep stars with RUWE at most this (or no RUWE).
    epoch : "auto", `~astropy.time.Time`, str, float or None, optional
        Epoch to propagate the positions to; "auto" uses ``DATE-OBS`` when
        present; None keeps the Gaia epoch (2016.0).
    margin : `~astropy.units.Quantity`, optional
        Added to the footprint radius.
    table : str or None, optional
        Archive table; default ``conf.gaia_table`` (``gaiadr3.gaia_source``).
    client : object or None, optional
        An object with ``launch_job_async(query)`` returning a job with
        ``get_results()`` (default ``astroquery.gaia.Gaia``). Tests inject a
        fake client here.
    cache : bool, optional
        Read and write the on-disk cache.
    cache_dir : str or None, optional
        Cache directory; default ``conf.cache_dir`` or the astropy cache.

    Returns
    -------
    catalog : `~astropy.table.QTable`
        As `load_catalog`.

    Raises
    ------
    astro_aeqa.exceptions.CatalogError
        If the archive cannot be reached or answers with an error.
    """
    wcs = celestial_wcs(ccd, name=name)
    centre, radius = footprint(wcs, ccd.shape, margin=margin)
    table = table or conf.gaia_table
    query = _adql(table, centre, radius, g_range, ruwe_max)
    key = hashlib.sha256(query.encode()).hexdigest()[:24]
    cache_file = _cache_dir(cache_dir) / f"gaia_{key}.ecsv" if cache else None
    if cache_file is not None and cache_file.is_file():
        log.info("Gaia catalogue from cache %s", cache_file)
        result = Table.read(cache_file, format="ascii.ecsv")
    else:
        if client is None:
            try:
                from astroquery.gaia import Gaia as client
            except ImportError as exc:
                msg = (
                    "astroquery is needed to query Gaia (pip install astroquery); or pass a local "
                    "catalogue file with --catalog FILE / load_catalog(path)"
                )
                raise CatalogError(msg) from exc
        if hasattr(client, "ROW_LIMIT"):
            client.ROW_LIMIT = -1
        log.info(
            "querying %s within %.3f deg of (%.5f, %.5f)",
            table,
            radius.to_value(u.deg),
            centre.ra.deg,
            centre.dec.deg,
        )
        try:
            job = client.launch_job_async(query)
            result = job.get_results()
        except Exception as exc:  # requests/HTTP/socket errors all mean "unreachable"
            msg = (
                f"could not query the Gaia archive for {name} ({type(exc).__name__}: {exc}); "
                "check the network, or use a local reference catalogue: "
                "aeqa validate FILE --catalog catalog.ecsv, or load_catalog(path) in Python "
                "(ECSV/CSV/FITS/VOTable with ra, dec, phot_g_mean_mag)"
            )
            raise CatalogError(msg) from exc
        result = Table(result)
        limit = getattr(client, "ROW_LIMIT", -1)
        if limit is not None and limit > 0 and len(result) >= limit:
            warnings.warn(
                f"the Gaia query returned exactly ROW_LIMIT={limit} rows: the catalogue "
                "may be truncated",
                AEQAWarning,
                stacklevel=2,
            )
        if cache_file is not None:
            out = Table(result, copy=False)
            out.meta["AEQAQRY"] = query
            with atomic_write(cache_file, overwrite=True) as tmp:
                out.write(tmp, format="ascii.ecsv", overwrite=True)
    result = _standardise(result, f"Gaia ({table})")
    if isinstance(epoch, str) and epoch == "auto":
        epoch = frame_epoch(ccd)
    if epoch is not None:
        result = propagate_epoch(result, epoch)
    return result
