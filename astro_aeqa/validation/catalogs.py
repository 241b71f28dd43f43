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
    "COLUMN_ALIASES",
    "reference_stars",
    "sky_tiles",
    "warn_epoch_gap",
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
    "phot_variable_flag",
)

#: Other names of the Gaia columns (lower case): VizieR (I/355/gaiadr3, I/345/gaia2)
#: and common exports. ``RA_ICRS`` and ``DE_ICRS`` are at the Gaia epoch (``Epoch``).
COLUMN_ALIASES = {
    "ra_icrs": "ra",
    "de_icrs": "dec",
    "dej2000": "dec",
    "raj2000": "ra",
    "gmag": "phot_g_mean_mag",
    "bpmag": "phot_bp_mean_mag",
    "rpmag": "phot_rp_mean_mag",
    "bp-rp": "bp_rp",
    "pmde": "pmdec",
    "source": "source_id",
    "epoch": "ref_epoch",
    "varflag": "phot_variable_flag",
}

#: Largest gap (years) between a frame and a catalogue without proper motions
#: that passes without a warning.
MAX_EPOCH_GAP = 10.0

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
    for old, new in COLUMN_ALIASES.items():
        if old in table.colnames and new not in table.colnames:
            table.rename_column(old, new)
    missing = [c for c in required if c not in table.colnames]
    if missing:
        msg = (
            f"catalogue {source} lacks the column(s) {', '.join(missing)}; a reference catalogue "
            f"needs {', '.join(required)} (Gaia names, or VizieR's RA_ICRS, DE_ICRS, Gmag; "
            "optional: pmra, pmdec, ref_epoch, bp_rp, ruwe, phot_variable_flag, source_id). "
            f"It has: {', '.join(table.colnames[:20])}"
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


def _variable(table):
    if "phot_variable_flag" not in table.colnames:
        return np.zeros(len(table), bool)
    flag = np.ma.filled(np.ma.asarray(table["phot_variable_flag"]), "")
    flag = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in np.ravel(flag)])
    return np.char.upper(np.char.strip(flag)) == "VARIABLE"


def reference_stars(catalog, *, g_range=None, ruwe_max=None, reject_variables=True):
    """
    Return a boolean array: the catalogue rows fit to be reference (zero-point) stars.

    A reference star has a finite G inside ``g_range``, a RUWE at most
    ``ruwe_max`` (a poor astrometric fit often means an unresolved binary;
    rows without RUWE are kept), and is not flagged ``VARIABLE`` in
    ``phot_variable_flag`` (as the paper rejects variables). The other rows
    stay in the catalogue: they are the neighbours that blend a star.

    Parameters
    ----------
    catalog : `~astropy.table.Table`
        With ``phot_g_mean_mag``; ``ruwe`` and ``phot_variable_flag`` are used when present.
    g_range : tuple or None, optional
        ``(min, max)`` G; None (or a None bound) for no limit.
    ruwe_max : float or None, optional
        Largest RUWE; None for no cut.
    reject_variables : bool, optional
        Reject rows flagged ``VARIABLE``.

    Returns
    -------
    keep : numpy.ndarray of bool

    Examples
    --------
    >>> from astropy.table import Table
    >>> from astro_aeqa.validation import reference_stars
    >>> t = Table({"phot_g_mean_mag": [12.0, 14.0, 15.0, 16.0], "ruwe": [1.0, 2.0, 1.0, 1.0],
    ...            "phot_variable_flag": ["NOT_AVAILABLE", "", "VARIABLE", "NOT_AVAILABLE"]})
    >>> reference_stars(t, g_range=(13, None), ruwe_max=1.4).tolist()
    [False, False, False, True]
    """
    g = np.asarray(u.Quantity(catalog["phot_g_mean_mag"], u.mag).value, float)
    keep = np.isfinite(g)
    if g_range is not None:
        lo, hi = g_range
        if lo is not None:
            keep &= g >= lo
        if hi is not None:
            keep &= g <= hi
    if ruwe_max is not None and "ruwe" in catalog.colnames:
        ruwe = np.asarray(np.ma.filled(np.ma.asarray(catalog["ruwe"], dtype=float), np.nan))
        keep &= ~(ruwe > ruwe_max)  # missing RUWE is kept
    if reject_variables:
        keep &= ~_variable(catalog)
    return keep


def _cuts(table, *, g_range=None, ruwe_max=None, reject_variables=False):
    return table[
        reference_stars(
            table, g_range=g_range, ruwe_max=ruwe_max, reject_variables=reject_variables
        )
    ]


def has_proper_motions(catalog):
    """True when ``catalog`` has ``pmra`` and ``pmdec`` with at least one finite value."""
    if "pmra" not in catalog.colnames or "pmdec" not in catalog.colnames:
        return False
    pm = np.asarray(u.Quantity(catalog["pmra"], u.mas / u.yr).value, float)
    return bool(np.isfinite(pm).any())


def warn_epoch_gap(catalog, epoch, *, source="catalogue", max_gap=MAX_EPOCH_GAP):
    """Warn when ``catalog`` has no proper motions and ``epoch`` is more than ``max_gap`` years away."""
    year = _epoch_year(epoch)
    if year is None or has_proper_motions(catalog):
        return False
    ref = GAIA_DR3_EPOCH
    if "ref_epoch" in catalog.colnames:
        refs = np.asarray(np.ma.filled(np.ma.asarray(catalog["ref_epoch"], dtype=float), np.nan))
        if np.isfinite(refs).any():
            ref = float(np.nanmedian(refs))
    gap = abs(year - ref)
    if gap <= max_gap:
        return False
    warnings.warn(
        f"{source} has no proper motions (pmra, pmdec), and its positions (epoch {ref:.1f}) are "
        f"{gap:.0f} years from the frame (epoch {year:.1f}): stars that moved more than the match "
        "radius or the aperture are lost or mismeasured; use a catalogue with pmra and pmdec "
        "(Gaia gaia_source, or the VizieR pmRA/pmDE columns)",
        AEQAWarning,
        stacklevel=3,
    )
    return True


def _epoch_year(epoch):
    if epoch is None:
        return None
    if isinstance(epoch, Time):
        return float(epoch.jyear)
    if isinstance(epoch, str):
        return float(Time(epoch, scale="tt").jyear)
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


def _read_one(catalog, required):
    if isinstance(catalog, Table):
        return _standardise(catalog, "table", required=required), "table"
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
    return _standardise(table, source, required=required), source


def load_catalog(
    catalog,
    *,
    g_range=None,
    ruwe_max=None,
    reject_variables=False,
    epoch=None,
    required=REQUIRED_COLUMNS,
):
    """
    Read a reference catalogue with Gaia (or VizieR) column names, from one or several files.

    Give `measure_frame` the whole catalogue: it checks blends against every
    row and chooses the reference stars itself (``g_range``, RUWE,
    variables). Cutting the catalogue here hides the neighbours that blend
    a star.

    Parameters
    ----------
    catalog : str, `~pathlib.Path`, `~astropy.table.Table` or a list of them
        An ECSV, CSV, FITS or VOTable file, or a table (for example the
        truth catalogue ``sim.catalog`` of `astro_aeqa.simulation`), or a
        list of them (for example the Gaia "chunk" files of a field), which
        are stacked, each source once by ``source_id``. A catalogue needs
        ``ra``, ``dec`` (deg) and ``phot_g_mean_mag``, in Gaia names or
        VizieR's (``RA_ICRS``, ``DE_ICRS``, ``Gmag``, ``BP-RP``, ``pmRA``,
        ``pmDE``, ``RUWE``, ``VarFlag``; see ``COLUMN_ALIASES``); ``pmra``,
        ``pmdec``, ``ref_epoch``, ``bp_rp``, ``ruwe`` and
        ``phot_variable_flag`` are used when present.
    g_range : tuple or None, optional
        ``(min, max)`` G limits; None keeps all.
    ruwe_max : float or None, optional
        Drop stars with ``ruwe`` above this value (when the column exists).
    reject_variables : bool, optional
        Drop stars flagged ``VARIABLE``.
    epoch : `~astropy.time.Time`, str, float or None, optional
        Propagate positions to this epoch with ``propagate_epoch``; warns when
        the catalogue has no proper motions and the epoch is more than
        ``MAX_EPOCH_GAP`` years from the catalogue's.

    Returns
    -------
    catalog : `~astropy.table.QTable`
        ``ra``/``dec`` in deg, magnitudes in mag, proper motions in mas/yr.

    Raises
    ------
    astro_aeqa.exceptions.CatalogError
        If a file is missing or unreadable, or a required column is missing.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.table import QTable
    >>> from astro_aeqa.validation import load_catalog
    >>> cat = load_catalog(QTable({"RA_ICRS": [1.0, 2.0], "DE_ICRS": [3.0, 4.0],
    ...                            "Gmag": [12.0, 18.0]}), g_range=(None, 15))
    >>> len(cat), cat["ra"].unit
    (1, Unit("deg"))
    """
    items = catalog if isinstance(catalog, (list, tuple)) else [catalog]
    if not items:
        msg = "catalog is an empty list; give one or more catalogue files or tables"
        raise CatalogError(msg)
    parts = [_read_one(item, required) for item in items]
    sources = ", ".join(src for _, src in parts)
    if len(parts) == 1:
        table = parts[0][0]
    else:
        from astropy.table import vstack

        tables = [t for t, _ in parts]
        common = [c for c in tables[0].colnames if all(c in t.colnames for t in tables[1:])]
        table = vstack([t[common] for t in tables], metadata_conflicts="silent")
        if "source_id" in table.colnames:
            _, first = np.unique(np.asarray(table["source_id"]), return_index=True)
            table = table[np.sort(first)]
    table = _cuts(table, g_range=g_range, ruwe_max=ruwe_max, reject_variables=reject_variables)
    table.meta["source"] = sources
    if epoch is not None:
        warn_epoch_gap(table, epoch, source=f"catalogue {sources}")
        table = propagate_epoch(table, epoch)
    log.debug("catalogue %s: %d rows after cuts", sources, len(table))
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


#: Gaia ``source_id`` holds the level-12 nested HEALPix index times 2**35.
_SOURCE_ID_LEVEL12 = 2**35


def _tile_level(radius):
    """HEALPix level whose cells are about half the footprint radius (3 to 10)."""
    cell = 58.6 / max(radius.to_value(u.deg), 1e-3)  # 58.6 deg / 2**level: cell size
    return int(np.clip(np.floor(np.log2(cell)) + 1, 3, 10))


def _healpix():
    try:
        from astropy_healpix import HEALPix
    except ImportError:
        return None
    return HEALPix


def sky_tiles(centre, radius, *, level=None):
    """
    Return the sky tiles that cover a circle: the unit of the Gaia cache.

    With astropy-healpix installed, the tiles are nested HEALPix cells of
    ``level`` (``("hpx", level, index)``), which map onto ranges of Gaia
    ``source_id``; without it, cells of a fixed grid in declination bands
    of ``58.6 / 2**level`` degrees (``("grid", level, band, cell)``). Frames
    dithered over one field share their tiles, so they share the cache.

    Parameters
    ----------
    centre : `~astropy.coordinates.SkyCoord`
    radius : `~astropy.units.Quantity`
    level : int or None, optional
        Default: cells about half the radius, from 3 to 10.

    Returns
    -------
    tiles : list of tuple
    """
    level = _tile_level(radius) if level is None else int(level)
    HEALPix = _healpix()
    if HEALPix is not None:
        from astropy.coordinates import ICRS

        hp = HEALPix(nside=2**level, order="nested", frame=ICRS())
        cells = hp.cone_search_skycoord(centre, radius)
        return [("hpx", level, int(c)) for c in np.unique(cells)]
    size = 58.6 / 2**level
    tiles = []
    dec0, r = centre.dec.deg, radius.to_value(u.deg)
    first = int((max(dec0 - r, -90) + 90) // size)
    last = int((min(dec0 + r, 90) + 90) // size)
    for band in range(first, last + 1):
        lo, hi = -90 + band * size, min(-90 + (band + 1) * size, 90)
        n_ra = _grid_n_ra(lo, hi, size)
        step = 360.0 / n_ra
        cells = np.arange(n_ra)
        mid = SkyCoord((cells + 0.5) * step * u.deg, np.full(n_ra, (lo + hi) / 2) * u.deg)
        corner = SkyCoord(
            cells * step * u.deg, np.full(n_ra, lo if abs(lo) > abs(hi) else hi) * u.deg
        )
        reach = mid.separation(corner)
        near = centre.separation(mid) <= radius + reach
        tiles.extend(("grid", level, band, int(c)) for c in cells[near])
    return tiles


def _grid_n_ra(lo, hi, size):
    widest = np.cos(np.deg2rad(min(abs(lo), abs(hi)) if lo * hi > 0 else 0.0))
    return max(1, int(np.ceil(360.0 * widest / size)))


def _grid_box(tile):
    _, level, band, cell = tile
    size = 58.6 / 2**level
    lo, hi = -90 + band * size, min(-90 + (band + 1) * size, 90)
    step = 360.0 / _grid_n_ra(lo, hi, size)
    return cell * step, (cell + 1) * step, lo, hi


def _tile_condition(tile):
    """ADQL condition selecting the rows of one tile."""
    if tile[0] == "hpx":
        _, level, index = tile
        per = _SOURCE_ID_LEVEL12 * 4 ** (12 - level)
        return f"source_id BETWEEN {index * per} AND {(index + 1) * per - 1}"
    ra0, ra1, dec0, dec1 = _grid_box(tile)
    return f"(ra >= {ra0:.8f} AND ra < {ra1:.8f} AND dec >= {dec0:.8f} AND dec < {dec1:.8f})"


def _tile_members(tile, table):
    """Boolean array: the rows of ``table`` (raw archive result) in ``tile``."""
    if tile[0] == "hpx":
        _, level, index = tile
        per = _SOURCE_ID_LEVEL12 * 4 ** (12 - level)
        sid = np.asarray(table["source_id"], dtype=np.int64)
        return sid // per == index
    ra0, ra1, dec0, dec1 = _grid_box(tile)
    ra = np.asarray(table["ra"], float)
    dec = np.asarray(table["dec"], float)
    return (ra >= ra0) & (ra < ra1) & (dec >= dec0) & (dec < dec1)


def _adql(table, tiles, g_max):
    where = "(" + " OR ".join(_tile_condition(t) for t in tiles) + ")"
    if g_max is not None:
        where += f" AND phot_g_mean_mag <= {float(g_max):.4f}"
    return f"SELECT {', '.join(GAIA_COLUMNS)} FROM {table} WHERE {where}"


def _tile_file(cache_dir, table, tile, g_max):
    key = f"{table}|{'-'.join(map(str, tile))}|{g_max}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = "_".join(map(str, tile))
    return cache_dir / f"gaia_{table.replace('.', '-')}_{name}_{digest}.ecsv"


def _run_with_timeout(func, timeout, what):
    """Run ``func()`` in a daemon thread; raise `TimeoutError` after ``timeout`` seconds."""
    if timeout is None:
        return func()
    import threading

    box = {}

    def target():
        try:
            box["result"] = func()
        except BaseException as exc:  # handed back to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="aeqa-gaia-query", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        msg = f"{what} did not answer within {timeout:g} s"
        raise TimeoutError(msg)
    if "error" in box:
        raise box["error"]
    return box["result"]


def query_gaia(
    ccd,
    *,
    g_range=(None, None),
    ruwe_max=None,
    epoch="auto",
    margin=0.5 * u.arcmin,
    table=None,
    client=None,
    cache=True,
    cache_dir=None,
    timeout=120.0,
    tile_level=None,
    blend_margin=2.5,
    name="image",
):
    """
    Query Gaia DR3 (``conf.gaia_table``) over the footprint of a frame, cached by sky tile.

    The footprint (a circle covering the frame) is covered by sky tiles
    (``sky_tiles``: HEALPix cells, or a fixed grid without astropy-healpix).
    Tiles already in the disk cache are read from it; the others are asked
    for in one asynchronous ADQL job (``GAIA_COLUMNS`` only, including
    ``phot_variable_flag`` and ``ruwe``) and written to the cache one file
    per tile, so dithered frames of one field, and a night of them, query
    once. The job has no ``TOP`` and asynchronous jobs have no row limit;
    the client (``astroquery.gaia.Gaia`` by default) is not modified. The
    query is abandoned after ``timeout`` seconds.

    Only the faint end of ``g_range`` is applied by the server, made
    ``blend_margin`` magnitudes fainter: stars outside ``g_range`` stay in
    the catalogue as the neighbours that blend a star, and `measure_frame`
    chooses the reference stars with its own ``g_range``.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame; only its WCS, shape and ``DATE-OBS`` are used.
    g_range : tuple, optional
        ``(min, max)`` G magnitude of the stars of interest; None for no limit.
    ruwe_max : float or None, optional
        Drop rows with RUWE above this; default None keeps them (as
        neighbours; `measure_frame` does not choose them as reference stars).
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
    timeout : float or None, optional
        Seconds to wait for the archive; None waits forever.
    tile_level : int or None, optional
        Level of the sky tiles (see ``sky_tiles``).
    blend_margin : float, optional
        Magnitudes added to the faint limit of ``g_range`` on the server.

    Returns
    -------
    catalog : `~astropy.table.QTable`
        As `load_catalog`, all the rows of the tiles that cover the footprint.

    Raises
    ------
    astro_aeqa.exceptions.CatalogError
        If the archive cannot be reached, answers with an error or does not
        answer within ``timeout``.
    """
    wcs = celestial_wcs(ccd, name=name)
    centre, radius = footprint(wcs, ccd.shape, margin=margin)
    table = table or conf.gaia_table
    g_max = None
    if g_range is not None and g_range[1] is not None:
        g_max = float(g_range[1]) + float(blend_margin)
    tiles = sky_tiles(centre, radius, level=tile_level)
    folder = _cache_dir(cache_dir) if cache else None
    parts, missing = [], []
    for tile in tiles:
        path = _tile_file(folder, table, tile, g_max) if folder is not None else None
        if path is not None and path.is_file():
            parts.append(Table.read(path, format="ascii.ecsv"))
        else:
            missing.append(tile)
    log.info("Gaia: %d sky tiles, %d from the cache", len(tiles), len(tiles) - len(missing))
    if missing:
        query = _adql(table, missing, g_max)
        if client is None:
            try:
                from astroquery.gaia import Gaia as client
            except ImportError as exc:
                msg = (
                    "astroquery is needed to query Gaia (pip install astroquery); or pass a local "
                    "catalogue file with --catalog FILE / load_catalog(path)"
                )
                raise CatalogError(msg) from exc
        log.info(
            "querying %s for %d sky tiles around (%.5f, %.5f)",
            table,
            len(missing),
            centre.ra.deg,
            centre.dec.deg,
        )
        try:
            result = _run_with_timeout(
                lambda: client.launch_job_async(query).get_results(), timeout, "the Gaia archive"
            )
        except Exception as exc:  # requests/HTTP/socket/timeout errors all mean "unreachable"
            msg = (
                f"could not query the Gaia archive for {name} ({type(exc).__name__}: {exc}); "
                "check the network (or raise timeout=), or use a local reference catalogue: "
                "aeqa validate FILE --catalog catalog.ecsv, or load_catalog(path) in Python "
                "(ECSV/CSV/FITS/VOTable with ra, dec, phot_g_mean_mag)"
            )
            raise CatalogError(msg) from exc
        result = Table(result)
        for tile in missing:
            rows = result[_tile_members(tile, result)]
            parts.append(rows)
            if folder is not None:
                out = Table(rows, copy=True)
                out.meta["AEQATILE"] = "-".join(map(str, tile))
                out.meta["AEQATAB"] = table
                with atomic_write(_tile_file(folder, table, tile, g_max), overwrite=True) as tmp:
                    out.write(tmp, format="ascii.ecsv", overwrite=True)
    from astropy.table import vstack

    nonempty = [p for p in parts if len(p)]
    result = vstack(nonempty, metadata_conflicts="silent") if nonempty else parts[0]
    result = _standardise(result, f"Gaia ({table})")
    if ruwe_max is not None:
        result = _cuts(result, ruwe_max=ruwe_max)
    result.meta["source"] = f"Gaia ({table})"
    if isinstance(epoch, str) and epoch == "auto":
        epoch = frame_epoch(ccd)
    if epoch is not None:
        result = propagate_epoch(result, epoch)
    return result
