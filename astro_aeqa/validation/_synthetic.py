# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
A tiny star field with a WCS and a truth catalogue, for tests and examples.

This is not the simulator (`astro_aeqa.simulation`); it only lets the
validation tools be exercised without it: Gaussian stars on a flat sky with
Poisson and read noise, and optionally an additive "cloud" over part of the
frame that also dims the stars under it.
"""

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData
from astropy.table import QTable
from astropy.wcs import WCS

__all__ = ["make_star_field"]


def make_star_field(
    shape=(256, 256),
    *,
    n_stars=120,
    fwhm=3.0,
    zero_point=25.0,
    sky=200.0,
    gain=2.0,
    read_noise=5.0,
    mag_range=(13.0, 19.0),
    cloud=0.0,
    cloud_box=None,
    seed=0,
    exptime=1.0,
):
    """
    Return ``(ccd, catalog, truth)`` for a simple simulated star field.

    ``catalog`` has Gaia column names (``ra``, ``dec``, ``phot_g_mean_mag``,
    ``bp_rp``, ``source_id``) plus the true ``x``/``y``; the instrumental
    magnitude of a star is ``phot_g_mean_mag - zero_point`` (per second).
    ``cloud`` in [0, 1] dims stars in ``cloud_box`` (``(y0, y1, x0, x1)``,
    default the left third) by ``cloud`` mag and adds ``cloud * sky`` of
    structured background there; ``truth`` is the contamination map.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [132.8, 11.8]
    wcs.wcs.crpix = [nx / 2 + 0.5, ny / 2 + 0.5]
    scale = 1.0 / 3600.0
    wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
    margin = 4
    x = rng.uniform(margin, nx - 1 - margin, n_stars)
    y = rng.uniform(margin, ny - 1 - margin, n_stars)
    mag = rng.uniform(*mag_range, n_stars)
    bp_rp = rng.uniform(0.3, 2.0, n_stars)
    truth = np.zeros(shape, np.float32)
    if cloud > 0:
        y0, y1, x0, x1 = cloud_box if cloud_box is not None else (0, ny, 0, nx // 3)
        truth[y0:y1, x0:x1] = cloud
    flux = exptime * 10 ** (-0.4 * (mag - zero_point))
    inside = truth[
        np.clip(y.round().astype(int), 0, ny - 1), np.clip(x.round().astype(int), 0, nx - 1)
    ]
    flux_obs = flux * 10 ** (-0.4 * inside)
    sigma = fwhm / 2.3548
    yy, xx = np.mgrid[0:ny, 0:nx]
    image = np.full(shape, sky * exptime, float)
    # structured cloud light: sky * cloud modulated by a smooth pattern
    image += truth * sky * exptime * (1.0 + 0.5 * np.sin(xx / 9.0) * np.cos(yy / 7.0))
    half = int(np.ceil(5 * sigma))
    for xi, yi, fi in zip(x, y, flux_obs, strict=True):
        ix, iy = int(round(xi)), int(round(yi))
        sl = (
            slice(max(iy - half, 0), min(iy + half + 1, ny)),
            slice(max(ix - half, 0), min(ix + half + 1, nx)),
        )
        image[sl] += (
            fi
            / (2 * np.pi * sigma**2)
            * np.exp(-((xx[sl] - xi) ** 2 + (yy[sl] - yi) ** 2) / (2 * sigma**2))
        )
    electrons = rng.poisson(np.clip(image, 0, None) * gain).astype(float)
    data = (electrons + rng.normal(0.0, read_noise, shape)) / gain
    meta = {
        "EXPTIME": exptime,
        "GAIN": gain,
        "RDNOISE": read_noise,
        "SATURATE": 60000.0,
        "DATE-OBS": "2016-01-01T00:00:00",
        "FWHM": fwhm,
    }
    ccd = CCDData(data.astype(np.float32), unit="adu", wcs=wcs, meta=meta)
    ra, dec = wcs.pixel_to_world_values(x, y)
    catalog = QTable()
    catalog["source_id"] = np.arange(1, n_stars + 1, dtype=np.int64)
    catalog["ra"] = ra * u.deg
    catalog["dec"] = dec * u.deg
    catalog["phot_g_mean_mag"] = mag * u.mag
    catalog["bp_rp"] = bp_rp * u.mag
    catalog["x"] = x
    catalog["y"] = y
    catalog["flux"] = flux
    return ccd, catalog, truth
