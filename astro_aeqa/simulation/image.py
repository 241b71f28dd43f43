# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Simulated frames with a truth catalogue and a truth contamination map."""

import dataclasses
import logging

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import QTable, Table
from astropy.time import Time
from astropy.wcs import WCS

from ..utils import check_fraction, check_positive_quantity, write_hdulist_atomic
from ..utils import progress_bar as _progress_bar
from . import _backgrounds as bg
from ._render import Canvas, EffectivePSF, add_stamps, sersic_stamps
from ._sources import (
    GALAXY_FRACTION,
    STAR_DENSITY,
    default_mag_range,
    galaxy_params,
    sample_power_law_mags,
)
from .instrument import PAPER_2P5M, Instrument
from .psf import _check_psf_args, psf_radius

__all__ = [
    "SimulatedImage",
    "simulate_image",
    "simulate_sequence",
    "BACKGROUNDS",
    "DEFAULT_POINTING",
]

log = logging.getLogger(__name__)

BACKGROUNDS = bg.BACKGROUNDS
DEFAULT_POINTING = SkyCoord(150.1, 2.2, unit="deg")  # the COSMOS field
_MIN_SIZE = 32
_DEFAULT_DATE = "2024-01-15T14:00:00"
_CATALOG_UNITS = {"ra": u.deg, "dec": u.deg, "flux": u.electron, "flux_adu": u.adu}


@dataclasses.dataclass
class SimulatedImage:
    """
    A simulated frame and its truth.

    Attributes
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame in adu (float32, bias included), with its WCS and the
        simulation parameters in ``meta`` (FITS keywords).
    catalog : `~astropy.table.QTable`
        One row per source inside the frame: ``ra``, ``dec`` (deg),
        ``phot_g_mean_mag`` (magnitude in the instrument band, before clouds),
        ``x``, ``y`` (0-based pixels), ``flux`` (electrons collected in the
        nominal exposure, before clouds and shutter), ``flux_adu``
        (``flux / gain``) and ``type`` (``'star'`` or ``'galaxy'``).
    truth : `~numpy.ndarray`
        2-D float32 contamination map in [0, 1]: the pixelwise maximum of the
        component maps (0 = clean pixel).
    components : dict
        Truth map of each component (``'cloud'``, ``'moon'``, ``'shutter'``,
        ``'trail'``, ``'spikes'``, ``'psf'``).
    """

    ccd: CCDData
    catalog: QTable
    truth: np.ndarray
    components: dict = dataclasses.field(default_factory=dict)

    def to_hdulist(self):
        """Return the frame as an `~astropy.io.fits.HDUList` (PRIMARY, TRUTH, CATALOG, TRUTH_*)."""
        hdul = self.ccd.to_hdu(as_image_hdu=False)
        truth = fits.ImageHDU(self.truth.astype(np.float32), name="TRUTH")
        truth.header["COMMENT"] = "contamination map in [0, 1]: 0 = clean, 1 = spoiled"
        hdul.append(truth)
        table = Table(self.catalog)
        for name in ("ra", "dec"):
            table[name] = self.catalog[name].to_value(u.deg)
            table[name].unit = u.deg
        for name in ("flux", "flux_adu"):
            # 'electron' is not a FITS unit: the unit goes in the column comment
            table[name] = u.Quantity(self.catalog[name]).value
            table[name].unit = None
        hdul.append(fits.table_to_hdu(table))
        hdul[-1].name = "CATALOG"
        for i, name in enumerate(table.colnames, start=1):
            if name in _CATALOG_UNITS:
                hdul[-1].header[f"TCOMM{i}"] = f"unit: {_CATALOG_UNITS[name]}"
        for name, arr in self.components.items():
            hdul.append(fits.ImageHDU(arr.astype(np.float32), name=f"TRUTH_{name.upper()}"[:68]))
        return hdul

    def write(self, path, *, overwrite=False):
        """
        Write the frame to a FITS file, atomically.

        The PRIMARY HDU holds the image, its WCS and the parameters; ``TRUTH``
        holds the contamination map, ``CATALOG`` the truth catalogue and
        ``TRUTH_<NAME>`` each component. `~astropy.nddata.CCDData.read` reads
        the image.

        Parameters
        ----------
        path : str or `~pathlib.Path`
            Output file.
        overwrite : bool, optional
            Replace an existing file. If `False` (default) an existing file
            raises `FileExistsError`.

        Returns
        -------
        path : `~pathlib.Path`
            The file written.
        """
        return write_hdulist_atomic(self.to_hdulist(), path, overwrite=overwrite)

    @classmethod
    def read(cls, path):
        """
        Read a file written by :meth:`write`.

        Parameters
        ----------
        path : str or `~pathlib.Path`
            The FITS file.

        Returns
        -------
        sim : `SimulatedImage`
        """
        with fits.open(path) as hdul:
            names = [h.name for h in hdul]
            for need in ("TRUTH", "CATALOG"):
                if need not in names:
                    msg = (
                        f"{path}: no {need} extension; "
                        "is this a file written by SimulatedImage.write?"
                    )
                    raise ValueError(msg)
            header = hdul[0].header
            data = hdul[0].data.astype(np.float32)
            wcs = WCS(header)
            meta = fits.Header(header)
            truth = np.array(hdul["TRUTH"].data, dtype=np.float32)
            table = Table.read(hdul["CATALOG"])
            comps = {
                h.name[6:].lower(): np.array(h.data, np.float32)
                for h in hdul
                if h.name.startswith("TRUTH_")
            }
        for key in list(wcs.to_header().keys()) + ["BUNIT"]:
            if not key.startswith(("DATE", "MJD")):
                meta.remove(key, ignore_missing=True, remove_all=True)
        ccd = CCDData(data, unit="adu", wcs=wcs, meta=meta)
        catalog = QTable(table)
        for name, unit in _CATALOG_UNITS.items():
            if name in catalog.colnames:
                catalog[name] = u.Quantity(np.asarray(catalog[name], float), unit)
        if "type" in catalog.colnames:
            catalog["type"] = np.char.strip(np.asarray(catalog["type"], dtype=str))
        return cls(ccd=ccd, catalog=catalog, truth=truth, components=comps)


def _check_shape(shape):
    try:
        ny, nx = (int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        msg = f"shape must be a pair of integers (ny, nx), got {shape!r}"
        raise TypeError(msg) from exc
    if ny < _MIN_SIZE or nx < _MIN_SIZE:
        msg = f"shape must be at least ({_MIN_SIZE}, {_MIN_SIZE}) pixels, got {(ny, nx)}"
        raise ValueError(msg)
    return ny, nx


def _check_backgrounds(background):
    if background is None:
        return []
    names = [background] if isinstance(background, str) else list(background)
    for name in names:
        if name not in BACKGROUNDS:
            msg = (
                f"background: unknown name {name!r}; known backgrounds are {', '.join(BACKGROUNDS)}"
            )
            raise ValueError(msg)
    return list(dict.fromkeys(names))


def _levels(level, names):
    if isinstance(level, dict):
        unknown = set(level) - set(names)
        if unknown:
            msg = f"level has entries {sorted(unknown)} for backgrounds not requested ({names})"
            raise ValueError(msg)
        return {n: check_fraction(level.get(n, 0.5), f"level[{n!r}]") for n in names}
    value = check_fraction(level, "level")
    return dict.fromkeys(names, value)


def _make_wcs(shape, instrument, pointing, rotation):
    ny, nx = shape
    scale = instrument.pixel_scale.to_value(u.deg / u.pix)
    rot = rotation.to_value(u.rad)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [pointing.icrs.ra.deg, pointing.icrs.dec.deg]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.cdelt = [-scale, scale]
    w.wcs.pc = [[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    w.wcs.set()
    return w


def _check_region(region, shape):
    if region is None:
        return np.ones(shape, bool)
    if isinstance(region, np.ndarray) and region.dtype == bool:
        if region.shape != shape:
            msg = f"defect_region must have the image shape {shape}, got {region.shape}"
            raise ValueError(msg)
        return region
    if isinstance(region, tuple) and all(isinstance(s, slice) for s in region) and len(region) == 2:
        mask = np.zeros(shape, bool)
        mask[region] = True
        return mask
    msg = (
        "defect_region must be None, a boolean array of the image shape "
        "or a pair of slices (np.s_[y0:y1, x0:x1])"
    )
    raise TypeError(msg)


def _random_sources(
    shape, wcs, instrument, fwhm_pix, rng, *, n_stars, n_galaxies, mag_range, alpha
):
    ny, nx = shape
    if n_stars is None:
        n_stars = int(round(STAR_DENSITY * ny * nx))
    if n_galaxies is None:
        n_galaxies = int(round(GALAXY_FRACTION * n_stars))
    for name, value in (("n_stars", n_stars), ("n_galaxies", n_galaxies)):
        if int(value) != value or value < 0:
            msg = f"{name} must be a non-negative integer, got {value!r}"
            raise ValueError(msg)
    if mag_range is None:
        mag_range = default_mag_range(instrument, fwhm_pix)
    m0, m1 = (float(m) for m in mag_range)
    if not m1 > m0:
        msg = f"mag_range must be (bright, faint) with bright < faint, got {mag_range}"
        raise ValueError(msg)
    star_mag = sample_power_law_mags(int(n_stars), (m0, m1), alpha, rng)
    gal_mag = sample_power_law_mags(int(n_galaxies), (m0 + 0.4 * (m1 - m0), m1), alpha, rng)
    n = int(n_stars) + int(n_galaxies)
    x = rng.uniform(-0.5, nx - 0.5, n)
    y = rng.uniform(-0.5, ny - 0.5, n)
    sky = wcs.pixel_to_world(x, y)
    kinds = np.array(["star"] * int(n_stars) + ["galaxy"] * int(n_galaxies))
    mag = np.concatenate([star_mag, gal_mag])
    gal = galaxy_params(mag, instrument.pixel_scale.to_value(u.arcsec / u.pix), rng)
    return {"ra": sky.ra.deg, "dec": sky.dec.deg, "mag": mag, "type": kinds, "galaxy": gal}


def _catalog_sources(catalog, mag_column, instrument, rng):
    if not isinstance(catalog, Table):
        msg = (
            "catalog must be an astropy Table with ra, dec and a magnitude column, "
            f"got {type(catalog).__name__}"
        )
        raise TypeError(msg)
    for name in ("ra", "dec"):
        if name not in catalog.colnames:
            msg = f"catalog has no {name!r} column (columns: {catalog.colnames})"
            raise ValueError(msg)
    if mag_column is None:
        cands = [c for c in catalog.colnames if c == "phot_g_mean_mag"] or [
            c for c in catalog.colnames if "mag" in c.lower()
        ]
        if not cands:
            msg = f"catalog has no magnitude column; pass mag_column= (columns: {catalog.colnames})"
            raise ValueError(msg)
        mag_column = cands[0]
    elif mag_column not in catalog.colnames:
        msg = f"mag_column {mag_column!r} is not a catalog column ({catalog.colnames})"
        raise ValueError(msg)

    def _deg(col):
        col = catalog[col]
        if isinstance(col, u.Quantity) or getattr(col, "unit", None) is not None:
            return u.Quantity(col, u.deg).value
        return np.asarray(col, float)

    mag = catalog[mag_column]
    mag = np.asarray(mag.value if isinstance(mag, u.Quantity) else mag, float)
    n = len(mag)
    kinds = (
        np.asarray(catalog["type"], dtype=str)
        if "type" in catalog.colnames
        else np.array(["star"] * n)
    )
    gal = galaxy_params(mag, instrument.pixel_scale.to_value(u.arcsec / u.pix), rng)
    return {"ra": _deg("ra"), "dec": _deg("dec"), "mag": mag, "type": kinds, "galaxy": gal}


_GAL_HALVES = np.array([4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128])


def _render_sources(shape, x, y, flux, kinds, gal, psfs, psf_of, fwhm_pix, *, bright_flux):
    """Noiseless source image in electrons; ``psf_of`` picks the PSF of each source."""
    from scipy.signal import fftconvolve

    canvas = Canvas(shape)
    for key, epsf in psfs.items():
        h_big = epsf.radius
        extra = epsf.radius - psfs[0].radius  # room for the defect
        h_small = min(int(np.ceil(2.5 * fwhm_pix)) + 2 + extra, h_big)
        h_mid = min(int(np.ceil(5 * fwhm_pix)) + 2 + extra, h_big)
        mine = (psf_of == key) & (kinds == "star")
        groups = [
            (flux < bright_flux / 100, h_small),
            ((flux >= bright_flux / 100) & (flux < bright_flux), h_mid),
            (flux >= bright_flux, h_big),
        ]
        for sel, half in groups:
            sel = mine & sel
            add_stamps(canvas, epsf, x[sel], y[sel], flux[sel], half)
        # galaxies: Sersic disc + bulge, pixel-integrated, convolved with the
        # pixel PSF, in batches of equal stamp size
        gi = np.flatnonzero((psf_of == key) & (kinds == "galaxy"))
        if gi.size == 0:
            continue
        hp = min(int(np.ceil(2.5 * fwhm_pix)) + 1 + extra, h_big)
        kernel = epsf.pixel_psf(hp)
        need = np.ceil(3.5 * gal["r_disc"][gi] + hp) + 1
        which = np.minimum(np.searchsorted(_GAL_HALVES, need), len(_GAL_HALVES) - 1)
        for w in np.unique(which):
            half = int(_GAL_HALVES[w])
            members = gi[which == w]
            o = 3 if half <= 16 else 1
            step = max(1, 2_000_000 // ((2 * half + 1) * o) ** 2)
            for start in range(0, members.size, step):
                idx = members[start : start + step]
                iy = np.rint(y[idx]).astype(np.intp)
                ix = np.rint(x[idx]).astype(np.intp)
                params = {k: v[idx] for k, v in gal.items()}
                st = sersic_stamps(half, y[idx] - iy, x[idx] - ix, params, oversample=o)
                st = fftconvolve(st, kernel[None], mode="same", axes=(1, 2))
                st *= (flux[idx] / st.sum(axis=(1, 2)))[:, None, None]
                canvas.add(st, iy, ix)
    return canvas.image()


def _spikes(shape, x, y, flux, fwhm_pix, level, sky_e, rng, *, n_max=20):
    """Diffraction spikes and halos of the brightest stars (electrons, truth)."""
    ny, nx = shape
    light = np.zeros(shape)
    order = np.argsort(flux)[::-1][:n_max]
    angle = rng.uniform(0, np.pi / 2)
    for i in order:
        f = flux[i]
        length = float(np.clip(8 * fwhm_pix * (f / 1e6) ** 0.5, 6 * fwhm_pix, 300))
        half = int(np.ceil(length))
        y0, x0 = int(np.rint(y[i])), int(np.rint(x[i]))
        ys = slice(max(y0 - half, 0), min(y0 + half + 1, ny))
        xs = slice(max(x0 - half, 0), min(x0 + half + 1, nx))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        yy = np.arange(ys.start, ys.stop)[:, None] - y[i]
        xx = np.arange(xs.start, xs.stop)[None, :] - x[i]
        r = np.hypot(yy, xx)
        # halo: a broad Moffat (beta 1.5) with 10 per cent of the flux at level 1
        alpha_h = 10 * fwhm_pix / (2 * np.sqrt(2 ** (1 / 1.5) - 1))
        halo = 0.5 / (np.pi * alpha_h**2) * (1 + (r / alpha_h) ** 2) ** -1.5
        stamp = 0.1 * level * f * halo
        sigma = 0.4 * fwhm_pix
        arms = np.zeros_like(r)
        for k in range(2):
            a = angle + k * np.pi / 2
            along = np.abs(xx * np.cos(a) + yy * np.sin(a))
            across = -xx * np.sin(a) + yy * np.cos(a)
            arms += np.exp(-0.5 * (across / sigma) ** 2) * np.exp(-along / (length / 3))
        arms[r < fwhm_pix] = 0
        total = arms.sum()
        if total > 0:
            stamp += 0.04 * level * f * arms / total
        light[ys, xs] += stamp
    truth = np.clip(light / sky_e, 0, 1).astype(np.float32)
    truth[truth < 0.02] = 0
    return light, truth


def _simulate(
    shape,
    *,
    instrument,
    fwhm,
    psf,
    beta,
    ellipticity,
    theta,
    background,
    level,
    psf_defect,
    defect_level,
    defect_region,
    sources,
    wcs,
    rng,
    cloud_screen,
    cloud_threshold,
    outer_scale,
    n_trails,
    date_obs,
    extra_meta,
    n_bright=2,
    cloud_cover=None,
    cloud_scatter=None,
):
    ny, nx = shape
    names = _check_backgrounds(background)
    levels = _levels(level, names)
    t = instrument.exposure_time.to_value(u.s)
    gain = instrument.gain.to_value(u.electron / u.adu)
    fwhm_pix = fwhm.to_value(u.arcsec) / instrument.pixel_scale.to_value(u.arcsec / u.pix)
    sky_e = instrument.sky_electrons_per_pixel()

    # sources
    x, y = wcs.world_to_pixel(SkyCoord(sources["ra"], sources["dec"], unit="deg"))
    x, y = np.asarray(x, float), np.asarray(y, float)
    inside = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    mag = np.array(sources["mag"], float)
    kinds = sources["type"]
    well = (instrument.saturation - instrument.bias).to_value(u.adu) * gain
    bright_flux = well * 1.133 * fwhm_pix**2  # the peak pixel saturates
    if "spikes" in names and n_bright > 0 and levels["spikes"] > 0:
        # spikes and halos belong to bright stars: make sure there are some
        m_sat = instrument.zero_point.value - 2.5 * np.log10(bright_flux / t)
        cand = np.flatnonzero(inside & (kinds == "star"))
        top = cand[np.argsort(mag[cand])[:n_bright]]
        mag[top] = np.minimum(mag[top], m_sat - 1.5)
    flux = instrument.electron_rate(mag) * t
    region = _check_region(defect_region, shape)
    theta_rad = theta.to_value(u.rad)
    big = min(psf_radius(fwhm_pix, factor=15.0), 160)
    psfs = {
        0: EffectivePSF(
            fwhm_pix, big, model=psf, beta=beta, ellipticity=ellipticity, theta=theta_rad
        )
    }
    psf_of = np.zeros(len(x), int)
    truth_psf = None
    if psf_defect is not None and defect_level > 0:
        psfs[1] = EffectivePSF(
            fwhm_pix,
            big + psf_radius(fwhm_pix, psf_defect) - psf_radius(fwhm_pix),
            model=psf,
            beta=beta,
            ellipticity=ellipticity,
            theta=theta_rad,
            defect=psf_defect,
            defect_level=defect_level,
            defect_angle=rng.uniform(0, np.pi),
        )
        iy = np.clip(np.rint(y), 0, ny - 1).astype(int)
        ix = np.clip(np.rint(x), 0, nx - 1).astype(int)
        psf_of[region[iy, ix]] = 1
        truth_psf = region.astype(np.float32)
    near = (x > -big) & (x < nx + big) & (y > -big) & (y < ny + big)
    src = _render_sources(
        shape,
        x[near],
        y[near],
        flux[near],
        kinds[near],
        {k: v[near] for k, v in sources["galaxy"].items()},
        psfs,
        psf_of[near],
        fwhm_pix,
        bright_flux=bright_flux,
    )

    components = {}
    transmission = 1.0
    extra_sky = np.zeros(shape, np.float32)
    exposure = 1.0
    meta = {}
    if "spikes" in names and levels["spikes"] > 0:
        stars = (kinds == "star") & near
        light, tr = _spikes(
            shape, x[stars], y[stars], flux[stars], fwhm_pix, levels["spikes"], sky_e, rng
        )
        src += light
        components["spikes"] = tr
    if "cloud" in names:
        screen = (
            cloud_screen if cloud_screen is not None else bg.screen_for(shape, rng, outer_scale)
        )
        if cloud_cover is not None:  # the screen's quantile that leaves 1 - cover clear
            cloud_threshold = float(np.quantile(screen, 1.0 - cloud_cover))
        ext = bg.cloud(screen, levels["cloud"], cloud_threshold)
        # Lit clouds, as in the paper's sec. 3.2: the light they reflect (moon, town)
        # exceeds the sky they block, so a cloud brightens the sky by ext * (scatter - 1).
        scatter = float(rng.uniform(1.5, 3.0))  # drawn always: a seed gives the same frame
        if cloud_scatter is not None:
            scatter = float(cloud_scatter)
        transmission = 1.0 - ext
        extra_sky += ext * scatter * sky_e
        components["cloud"] = ext
        meta["CLDSCAT"] = (scatter, "cloud scattered light / (extinction x sky)")
    if "moon" in names:
        tr = bg.moon(shape, levels["moon"], rng)
        extra_sky += bg.MOON_MAX * tr * sky_e
        components["moon"] = tr
    if "trail" in names and levels["trail"] > 0:
        light, tr = bg.trail(
            shape,
            levels["trail"],
            rng,
            width=max(2.0 * fwhm_pix, 2.0),
            peak=2.0 * sky_e,
            n_trails=n_trails,
        )
        extra_sky += light
        components["trail"] = tr
    if "shutter" in names:
        tr = bg.shutter(shape, levels["shutter"], rng)
        exposure = 1.0 - tr
        components["shutter"] = tr
    if truth_psf is not None:
        components["psf"] = truth_psf

    dark_e = instrument.dark_current.to_value(u.electron / u.s) * t
    expected = ((src + sky_e) * transmission + extra_sky) * exposure + dark_e
    electrons = rng.poisson(expected).astype(np.float32)
    electrons += rng.normal(0.0, instrument.read_noise.to_value(u.electron), shape).astype(
        np.float32
    )
    adu = electrons / np.float32(gain) + np.float32(instrument.bias.to_value(u.adu))
    np.minimum(adu, np.float32(instrument.saturation.to_value(u.adu)), out=adu)

    truth = np.zeros(shape, np.float32)
    for arr in components.values():
        np.maximum(truth, arr, out=truth)

    header = fits.Header()
    for key, (value, comment) in instrument.to_meta().items():
        header[key] = (value, comment)
    header["SIMULATE"] = (True, "simulated by astro_aeqa.simulation")
    header["DATE-OBS"] = (date_obs, "start of the exposure (UTC)")
    header["FWHM"] = (float(fwhm.to_value(u.arcsec)), "[arcsec] PSF FWHM")
    header["FWHMPIX"] = (float(fwhm_pix), "[pix] PSF FWHM")
    header["PSFMODEL"] = (psf, "PSF profile")
    header["PSFBETA"] = (float(beta), "Moffat beta")
    header["PSFELL"] = (float(ellipticity), "PSF ellipticity 1 - b/a")
    header["PSFTHETA"] = (float(theta.to_value(u.deg)), "[deg] PSF major axis angle")
    header["PSFDEF"] = (psf_defect or "none", "PSF defect")
    header["PSFDEFLV"] = (float(defect_level), "PSF defect level")
    header["BKGNAMES"] = (",".join(names) or "none", "backgrounds added")
    for name in names:
        header[f"LV_{name.upper()}"[:8]] = (levels[name], f"{name} level")
    header["SKYELEC"] = (sky_e, "[e-] nominal sky per pixel")
    header["SKYADU"] = (
        sky_e / gain + dark_e / gain + instrument.bias.to_value(u.adu),
        "[adu] nominal sky + dark + bias per pixel",
    )
    header["NSTARS"] = (int(np.sum(inside & (kinds == "star"))), "stars in the frame")
    header["NGALAXY"] = (int(np.sum(inside & (kinds == "galaxy"))), "galaxies in the frame")
    for key, value in {**meta, **extra_meta}.items():
        header[key] = value
    ccd = CCDData(adu, unit="adu", wcs=wcs, meta=header)

    cat = QTable()
    cat["ra"] = sources["ra"][inside] * u.deg
    cat["dec"] = sources["dec"][inside] * u.deg
    cat["phot_g_mean_mag"] = mag[inside]
    cat["x"] = x[inside]
    cat["y"] = y[inside]
    cat["flux"] = flux[inside] * u.electron
    cat["flux_adu"] = flux[inside] / gain * u.adu
    cat["type"] = kinds[inside]
    return SimulatedImage(ccd=ccd, catalog=cat, truth=truth, components=components)


def _prepare(
    shape,
    instrument,
    fwhm,
    psf,
    beta,
    ellipticity,
    theta,
    background,
    level,
    psf_defect,
    defect_level,
    rotation,
    pointing,
):
    shape = _check_shape(shape)
    if not isinstance(instrument, Instrument):
        msg = (
            "instrument must be an Instrument (for example PAPER_2P5M), "
            f"got {type(instrument).__name__}"
        )
        raise TypeError(msg)
    fwhm = (
        instrument.typical_fwhm if fwhm is None else check_positive_quantity(fwhm, "fwhm", u.arcsec)
    )
    beta, ellipticity = _check_psf_args(psf, beta, ellipticity, psf_defect)
    defect_level = check_fraction(defect_level, "defect_level")
    theta = u.Quantity(theta, u.rad) if isinstance(theta, u.Quantity) else float(theta) * u.rad
    if not isinstance(rotation, u.Quantity):
        msg = f"rotation must be an angle Quantity (e.g. rotation=30 * u.deg), got {rotation!r}"
        raise TypeError(msg)
    try:
        rotation = rotation.to(u.deg)
    except u.UnitConversionError as exc:
        msg = f"rotation must be an angle, got unit {rotation.unit}"
        raise u.UnitsError(msg) from exc
    pointing = DEFAULT_POINTING if pointing is None else pointing
    if not isinstance(pointing, SkyCoord):
        msg = f"pointing must be a SkyCoord, got {type(pointing).__name__}"
        raise TypeError(msg)
    names = _check_backgrounds(background)
    _levels(level, names)
    return shape, fwhm, beta, ellipticity, theta, defect_level, rotation, pointing


def simulate_image(
    shape=(1024, 1024),
    *,
    instrument=PAPER_2P5M,
    fwhm=None,
    psf="moffat",
    beta=2.5,
    ellipticity=0.0,
    theta=0.0,
    background=None,
    level=0.5,
    psf_defect=None,
    defect_level=0.5,
    defect_region=None,
    n_stars=None,
    n_galaxies=None,
    catalog=None,
    mag_column=None,
    mag_range=None,
    alpha=0.3,
    pointing=None,
    rotation=0 * u.deg,
    outer_scale=None,
    cloud_threshold=0.0,
    cloud_cover=None,
    cloud_scatter=None,
    n_trails=1,
    date_obs=None,
    seed=None,
):
    """
    Simulate one frame of a star and galaxy field, with its truth.

    The image is built in electrons: sources (stars with the PSF, galaxies as
    Sersic disc + bulge convolved with the PSF) on the sky and dark current,
    with the requested backgrounds; then Poisson noise, Gaussian read noise,
    the gain, the bias and saturation clipping give adu.

    Parameters
    ----------
    shape : tuple of int, optional
        ``(ny, nx)``, at least 32 x 32.
    instrument : `Instrument`, optional
        Telescope and camera; ``PAPER_2P5M`` by default.
    fwhm : `~astropy.units.Quantity`, optional
        Seeing FWHM (angle); default ``instrument.typical_fwhm``.
    psf : {'moffat', 'gaussian'}, optional
        PSF profile.
    beta : float, optional
        Moffat power index (default 2.5).
    ellipticity : float, optional
        PSF ellipticity ``1 - b/a`` in [0, 1); ``fwhm`` is the geometric mean.
    theta : float or `~astropy.units.Quantity`, optional
        Angle of the PSF major axis from the x axis (radians if a float).
    background : str or list of str, optional
        Backgrounds to add, from ``BACKGROUNDS``: ``'cloud'``, ``'moon'``,
        ``'shutter'``, ``'trail'``, ``'spikes'``. `None` for a clean frame.
    level : float or dict, optional
        Strength in [0, 1] of the backgrounds, or a dict name -> level.
    psf_defect : {None, 'elongated', 'double', 'defocus'}, optional
        A PSF defect: tracking smear, a doubled image or a defocus donut.
    defect_level : float, optional
        Strength of the defect in [0, 1].
    defect_region : array or tuple of slice, optional
        Where the defect applies: a boolean array of ``shape`` or
        ``np.s_[y0:y1, x0:x1]``; default the whole frame.
    n_stars, n_galaxies : int, optional
        Numbers of random sources; by default 1.2e-3 stars per pixel and
        one galaxy per ten stars.
    catalog : `~astropy.table.Table`, optional
        Sources to use instead of random stars: ``ra``, ``dec`` (deg) and a
        magnitude column (``phot_g_mean_mag`` or the first with 'mag' in
        its name, or ``mag_column``); an optional ``type`` column.
    mag_column : str, optional
        The magnitude column of ``catalog``.
    mag_range : tuple of float, optional
        ``(bright, faint)`` magnitudes of the random stars; by default from
        2 mag above saturation to 1 mag below the 5-sigma limit.
    alpha : float, optional
        Slope of the luminosity function ``dN/dm ~ 10**(alpha m)``.
    pointing : `~astropy.coordinates.SkyCoord`, optional
        Centre of the TAN projection; default ``DEFAULT_POINTING``.
    rotation : `~astropy.units.Quantity`, optional
        Position angle of the frame.
    outer_scale : float, optional
        Outer scale (pixels) of the von Karman cloud screen; default the
        frame size.
    cloud_threshold : float, optional
        Screen values below it are clear sky (0, the default, is the paper's
        coverage: extinction = level x screen everywhere).
    cloud_cover : float, optional
        Fraction of the frame under cloud, in (0, 1]: sets ``cloud_threshold``
        to the screen's ``1 - cloud_cover`` quantile (give one of the two).
        With an ``outer_scale`` larger than the frame, a cover of 0.5-0.95
        makes the large smooth clouds that leave a clear corner.
    cloud_scatter : float, optional
        The cloud's scattered light in units of the extinction times the
        sky: 0 dims the sky with the stars, 1 dims the stars alone (a dark
        site), above 1 brightens the sky (a lit cloud). Default: drawn
        from 1.5-3 for each frame.
    n_trails : int, optional
        Number of satellite trails.
    date_obs : str or `~astropy.time.Time`, optional
        ``DATE-OBS`` of the frame.
    seed : int or `~numpy.random.Generator`, optional
        Seed of `numpy.random.default_rng`: the same seed gives the same image.

    Returns
    -------
    sim : `SimulatedImage`

    Raises
    ------
    ValueError
        A shape below 32 pixels, a level outside [0, 1], an unknown
        background or PSF name.
    TypeError, astropy.units.UnitsError
        ``fwhm`` (or another physical input) without a unit, or of the wrong unit.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astro_aeqa.simulation import simulate_image, PAPER_2P5M
    >>> sim = simulate_image((128, 128), instrument=PAPER_2P5M, fwhm=0.8 * u.arcsec,
    ...                      background="cloud", level=0.6, seed=1)
    >>> sim.ccd.shape, sim.ccd.unit
    ((128, 128), Unit("adu"))
    >>> 0.0 <= float(sim.truth.min()) and float(sim.truth.max()) <= 1.0
    True
    """
    shape, fwhm, beta, ellipticity, theta, defect_level, rotation, pointing = _prepare(
        shape,
        instrument,
        fwhm,
        psf,
        beta,
        ellipticity,
        theta,
        background,
        level,
        psf_defect,
        defect_level,
        rotation,
        pointing,
    )
    rng = np.random.default_rng(seed)
    wcs = _make_wcs(shape, instrument, pointing, rotation)
    fwhm_pix = fwhm.to_value(u.arcsec) / instrument.pixel_scale.to_value(u.arcsec / u.pix)
    if catalog is None:
        sources = _random_sources(
            shape,
            wcs,
            instrument,
            fwhm_pix,
            rng,
            n_stars=n_stars,
            n_galaxies=0
            if n_galaxies is None and n_stars is not None and n_stars == 0
            else n_galaxies,
            mag_range=mag_range,
            alpha=alpha,
        )
    else:
        sources = _catalog_sources(catalog, mag_column, instrument, rng)
    if cloud_cover is not None:
        if cloud_threshold != 0.0:
            msg = "give cloud_cover or cloud_threshold, not both"
            raise ValueError(msg)
        cloud_cover = check_fraction(cloud_cover, "cloud_cover")
        if cloud_cover == 0.0:
            msg = "cloud_cover must be above 0 (background=None makes a clear frame)"
            raise ValueError(msg)
    if cloud_scatter is not None:
        cloud_scatter = float(cloud_scatter)
        if not (np.isfinite(cloud_scatter) and cloud_scatter >= 0):
            msg = f"cloud_scatter must be a finite number >= 0, got {cloud_scatter}"
            raise ValueError(msg)
    date_obs = Time(date_obs if date_obs is not None else _DEFAULT_DATE).isot
    extra = {"SEED": (str(seed) if seed is not None else "none", "random seed")}
    return _simulate(
        shape,
        instrument=instrument,
        fwhm=fwhm,
        psf=psf,
        beta=beta,
        ellipticity=ellipticity,
        theta=theta,
        background=background,
        level=level,
        psf_defect=psf_defect,
        defect_level=defect_level,
        defect_region=defect_region,
        sources=sources,
        wcs=wcs,
        rng=rng,
        cloud_screen=None,
        cloud_threshold=check_fraction(cloud_threshold, "cloud_threshold"),
        outer_scale=outer_scale,
        n_trails=int(n_trails),
        date_obs=date_obs,
        extra_meta=extra,
        cloud_cover=cloud_cover,
        cloud_scatter=cloud_scatter,
    )


def simulate_sequence(
    n_frames,
    *,
    shape=(512, 512),
    instrument=PAPER_2P5M,
    fwhm=None,
    seed=None,
    background="cloud",
    level=0.6,
    cloud_speed=(0.0, 20.0),
    seeing_jitter=0.05,
    cadence=None,
    dither=0.0,
    start_time=_DEFAULT_DATE,
    cloud_threshold=0.3,
    outer_scale=None,
    progress_bar=False,
    **kwargs,
):
    """
    Simulate a sequence of frames of one star field.

    All frames share the sources and (up to ``dither``) the WCS. A cloud
    screen larger than the frame drifts by ``cloud_speed`` pixels per frame,
    the seeing FWHM varies by ``seeing_jitter`` and ``DATE-OBS`` increases by
    ``cadence``.

    Parameters
    ----------
    n_frames : int
        Number of frames (at least 1).
    shape, instrument, fwhm : optional
        As in `simulate_image`.
    seed : int, optional
        Seed of `numpy.random.default_rng`.
    background : str or list of str, optional
        Backgrounds of every frame (``'cloud'`` by default).
    level : float or array-like, optional
        Background level, one for all frames or one per frame.
    cloud_speed : tuple of float, optional
        ``(vy, vx)`` drift of the clouds in pixels per frame.
    seeing_jitter : float, optional
        Fractional standard deviation of the FWHM from frame to frame.
    cadence : `~astropy.units.Quantity`, optional
        Time between frame starts; default the exposure time + 5 s.
    dither : float, optional
        Standard deviation (pixels) of random pointing offsets.
    start_time : str or `~astropy.time.Time`, optional
        ``DATE-OBS`` of the first frame.
    cloud_threshold : float, optional
        Clear-sky threshold of the cloud screen (see `simulate_image`).
    outer_scale : float, optional
        Outer scale of the cloud screen (pixels).
    progress_bar : bool, optional
        Show a progress bar.
    **kwargs
        Passed to `simulate_image` (``psf``, ``beta``, ``n_stars``, ...).

    Returns
    -------
    frames : list of `SimulatedImage`

    Examples
    --------
    >>> from astro_aeqa.simulation import simulate_sequence
    >>> frames = simulate_sequence(2, shape=(64, 64), seed=3, cloud_speed=(0, 8))
    >>> [f.ccd.meta["DATE-OBS"] for f in frames]
    ['2024-01-15T14:00:00.000', '2024-01-15T14:01:05.000']
    """
    n_frames = int(n_frames)
    if n_frames < 1:
        msg = f"n_frames must be at least 1, got {n_frames}"
        raise ValueError(msg)
    levels = np.broadcast_to(np.asarray(level, float), (n_frames,))
    for lv in levels:
        check_fraction(lv, "level")
    seeing_jitter = float(seeing_jitter)
    if not 0 <= seeing_jitter < 0.5:
        msg = f"seeing_jitter must lie in [0, 0.5), got {seeing_jitter}"
        raise ValueError(msg)
    vy, vx = (float(v) for v in cloud_speed)
    allowed = {
        "psf",
        "beta",
        "ellipticity",
        "theta",
        "psf_defect",
        "defect_level",
        "defect_region",
        "n_stars",
        "n_galaxies",
        "catalog",
        "mag_column",
        "mag_range",
        "alpha",
        "pointing",
        "rotation",
        "n_trails",
    }
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        msg = (
            f"simulate_sequence got unexpected keyword arguments {unknown}; "
            f"allowed: {sorted(allowed)}"
        )
        raise TypeError(msg)
    psf = kwargs.get("psf", "moffat")
    rotation = kwargs.pop("rotation", 0 * u.deg)
    pointing = kwargs.pop("pointing", None)
    shape, fwhm, beta, ellipticity, theta, defect_level, rotation, pointing = _prepare(
        shape,
        instrument,
        fwhm,
        kwargs.pop("psf", "moffat"),
        kwargs.pop("beta", 2.5),
        kwargs.pop("ellipticity", 0.0),
        kwargs.pop("theta", 0.0),
        background,
        float(levels[0]),
        kwargs.get("psf_defect"),
        kwargs.pop("defect_level", 0.5),
        rotation,
        pointing,
    )
    if cadence is None:
        cadence = instrument.exposure_time + 5 * u.s
    cadence = check_positive_quantity(cadence, "cadence", u.s)
    rng = np.random.default_rng(seed)
    ny, nx = shape
    wcs0 = _make_wcs(shape, instrument, pointing, rotation)
    fwhm_pix = fwhm.to_value(u.arcsec) / instrument.pixel_scale.to_value(u.arcsec / u.pix)
    catalog = kwargs.pop("catalog", None)
    if catalog is None:
        sources = _random_sources(
            shape,
            wcs0,
            instrument,
            fwhm_pix,
            rng,
            n_stars=kwargs.pop("n_stars", None),
            n_galaxies=kwargs.pop("n_galaxies", None),
            mag_range=kwargs.pop("mag_range", None),
            alpha=kwargs.pop("alpha", 0.3),
        )
    else:
        sources = _catalog_sources(catalog, kwargs.pop("mag_column", None), instrument, rng)
    big_shape = (
        ny + int(np.ceil(abs(vy) * (n_frames - 1))) + 1,
        nx + int(np.ceil(abs(vx) * (n_frames - 1))) + 1,
    )
    names = _check_backgrounds(background)
    screen = None
    if "cloud" in names:
        screen = bg.screen_for(
            big_shape, rng, outer_scale if outer_scale is not None else max(shape)
        )
    start = Time(start_time)
    frames = []
    for i in _progress_bar(range(n_frames), enabled=progress_bar, desc="simulate"):
        frng = np.random.default_rng(rng.integers(2**63))
        fwhm_i = fwhm * max(0.3, 1.0 + seeing_jitter * frng.standard_normal())
        if dither > 0:
            off = frng.normal(0, dither, 2) * instrument.pixel_scale.to_value(u.deg / u.pix)
            p = SkyCoord(
                pointing.icrs.ra.deg + off[0] / np.cos(pointing.icrs.dec.rad),
                pointing.icrs.dec.deg + off[1],
                unit="deg",
            )
            wcs = _make_wcs(shape, instrument, p, rotation)
        else:
            wcs = wcs0
        window = None
        if screen is not None:
            oy = int(round(vy * i)) if vy >= 0 else int(round(abs(vy) * (n_frames - 1 - i)))
            ox = int(round(vx * i)) if vx >= 0 else int(round(abs(vx) * (n_frames - 1 - i)))
            window = screen[oy : oy + ny, ox : ox + nx]
        date = (start + i * cadence).isot
        extra = {
            "SEED": (str(seed) if seed is not None else "none", "random seed of the sequence"),
            "FRAMENO": (i, "frame number in the sequence"),
        }
        frames.append(
            _simulate(
                shape,
                instrument=instrument,
                fwhm=fwhm_i,
                psf=psf,
                beta=beta,
                ellipticity=ellipticity,
                theta=theta,
                background=background,
                level=float(levels[i]),
                psf_defect=kwargs.get("psf_defect"),
                defect_level=defect_level,
                defect_region=kwargs.get("defect_region"),
                sources=sources,
                wcs=wcs,
                rng=frng,
                cloud_screen=window,
                cloud_threshold=check_fraction(cloud_threshold, "cloud_threshold"),
                outer_scale=outer_scale,
                n_trails=int(kwargs.get("n_trails", 1)),
                date_obs=date,
                extra_meta=extra,
            )
        )
    return frames
