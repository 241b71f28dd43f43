# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Scenes that ``astro_aeqa.simulation`` did not make, for ``benchmarks/real.py``.

An independent, deliberately simple generator (Gaussian stars from a
power-law luminosity function, Poisson and read noise) with the defects our
simulator's defaults do not make: smooth clouds larger than a network tile
that cover 50-95 % of a frame and either brighten the sky (scattered light
up to 25x the sky) or only dim (2.5 mag of extinction at full cover, the
sky dimmed with the stars, or the stars alone), and Moon gradients. Each
scene has its truth map in [0, 1].
"""

import numpy as np
from astropy.nddata import CCDData
from scipy import ndimage

EXTINCTION_MAG = 2.5  # at full cover
SCATTER = 25.0  # scattered light at full cover, in units of the clear sky
KINDS = ("clean", "cloud_bright", "cloud_dim", "cloud_dim_stars", "moon")


def scene(
    kind,
    *,
    shape=(1024, 1024),
    seed=0,
    cover=0.8,
    sky=400.0,
    exptime=30.0,
    fwhm=3.0,
    n_stars=1500,
    read_noise=6.0,
    sky_jitter=0.03,
):
    """A frame of ``kind`` (see `KINDS`) as CCDData in electrons, and its truth map."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    sky = sky * (1 + sky_jitter * rng.standard_normal())  # clean skies differ a little
    # stars: magnitudes from dN/dm ~ 10^(0.3 m), peak S/N up to a few thousand
    mags = np.log10(rng.uniform(1.0, 10 ** (0.3 * 7), n_stars)) / 0.3
    flux = 3e5 * 10 ** (-0.4 * mags)
    stars = np.zeros(shape, np.float32)
    ys, xs = rng.integers(0, ny, n_stars), rng.integers(0, nx, n_stars)
    np.add.at(stars, (ys, xs), flux)
    stars = ndimage.gaussian_filter(stars, fwhm / 2.355)
    truth = np.zeros(shape, np.float32)
    transmission = np.ones(shape, np.float32)
    extra = np.zeros(shape, np.float32)
    if kind.startswith("cloud"):
        field = ndimage.gaussian_filter(
            rng.standard_normal((ny // 8, nx // 8)), min(ny, nx) / 8 / 4
        )
        field = ndimage.zoom(field, 8, order=1)[:ny, :nx]
        rank = field.ravel().argsort().argsort().reshape(field.shape) / field.size
        truth = np.clip((rank - (1 - cover)) / 0.3, 0, 1).astype(np.float32)
        transmission = 10 ** (-0.4 * EXTINCTION_MAG * truth)
        if kind == "cloud_bright":
            extra = SCATTER * sky * truth
    elif kind == "moon":
        y, x = np.mgrid[:ny, :nx]
        cy, cx = -rng.uniform(0.5, 1.0) * ny, rng.uniform(0, 1) * nx  # below the frame
        light = 5.0 * sky * np.exp(-np.hypot(y - cy, x - cx) / (0.2 * min(shape)))
        extra = light.astype(np.float32)
        truth = np.clip(light / sky, 0, 1).astype(np.float32)
    elif kind != "clean":
        raise ValueError(kind)
    sky_map = sky * (transmission if kind == "cloud_dim" else 1.0) + extra
    signal = stars * transmission + sky_map
    data = rng.normal(signal, np.sqrt(signal + read_noise**2)).astype(np.float32)
    ccd = CCDData(data, unit="electron", meta={"EXPTIME": exptime, "GAIN": 1.0})
    return ccd, truth


def inject(data, kind, *, seed=0, cover=0.8, sky=None):
    """Put a cloud or the Moon into a real frame: its sources (and, for
    ``cloud_dim``, its sky) dim, scattered light adds; the frame's noise stays."""
    data = np.asarray(data, np.float32)
    if sky is None:
        sky = float(np.median(data))
    _, truth = scene(kind, shape=data.shape, seed=seed, cover=cover, n_stars=1, sky=1.0)
    rng = np.random.default_rng(seed + 1)
    transmission = 10 ** (-0.4 * EXTINCTION_MAG * truth)
    # dim the sources, not the noise: what rises above the sky by 3 sigma
    above = data - sky
    sigma = 1.4826 * np.median(np.abs(above - np.median(above)))
    sources = np.where(above > 3 * sigma, above, 0.0)
    out = data - sources * (1 - transmission)
    if kind == "cloud_dim":  # a dark-site cloud dims the sky glow too
        out = out - (1 - transmission) * sky
    if kind == "cloud_bright":
        light = SCATTER * abs(sky) * truth
        out = out + light + rng.normal(0, np.sqrt(np.maximum(light, 0)))
    elif kind == "moon":
        light = truth * abs(sky)  # the truth of a Moon scene is its light over the sky
        out = out + light + rng.normal(0, np.sqrt(np.maximum(light, 0)))
    return out.astype(np.float32), truth
