# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""PSF models, pixel-integrated PSF grids and vectorised stamp rendering (private)."""

import numpy as np
from scipy import signal

__all__ = ["psf_profile", "EffectivePSF", "Canvas", "add_stamps", "sersic_stamps"]

OVERSAMPLE = 9  # odd, so a pixel box is centred on a grid sample
_CHUNK = 4_000_000


def psf_profile(dx, dy, fwhm, *, model="moffat", beta=2.5, ellipticity=0.0, theta=0.0):
    """
    Unnormalised PSF at offsets ``dx, dy`` (pixels) from the centre.

    ``fwhm`` is the geometric mean of the major and minor FWHM; the major
    axis makes the angle ``theta`` (radians) with the x axis.
    """
    q = 1.0 - ellipticity
    a = fwhm / np.sqrt(q)
    b = fwhm * np.sqrt(q)
    c, s = np.cos(theta), np.sin(theta)
    u = dx * c + dy * s
    v = -dx * s + dy * c
    r2 = (u / a) ** 2 + (v / b) ** 2  # in units of FWHM**2
    if model == "gaussian":
        return np.exp(-4.0 * np.log(2.0) * r2)
    return (1.0 + 4.0 * (2.0 ** (1.0 / beta) - 1.0) * r2) ** (-beta)


def _defect_kernel(defect, level, fwhm, k, rng_angle):
    """A fine-grid kernel (odd square array, sum 1) that the PSF is convolved with."""
    if defect is None or level <= 0:
        return None
    if defect == "elongated":
        # tracking error: the star moves along a line during the exposure
        length = 3.0 * level * fwhm * k
        n = max(int(np.ceil(length)), 1)
        h = n // 2 + 1
        kern = np.zeros((2 * h + 1, 2 * h + 1))
        t = np.linspace(-length / 2, length / 2, 4 * n + 1)
        xs = np.rint(h + t * np.cos(rng_angle)).astype(int)
        ys = np.rint(h + t * np.sin(rng_angle)).astype(int)
        np.add.at(kern, (ys, xs), 1.0)
    elif defect == "double":
        # a jump in tracking: a second image, separated by 1.5-3 FWHM
        sep = (1.5 + 1.5 * level) * fwhm * k
        h = int(np.ceil(sep)) + 1
        kern = np.zeros((2 * h + 1, 2 * h + 1))
        kern[h, h] = 1.0
        ys = int(np.rint(h + sep * np.sin(rng_angle)))
        xs = int(np.rint(h + sep * np.cos(rng_angle)))
        kern[ys, xs] += 0.3 + 0.5 * level
    elif defect == "defocus":
        # an out-of-focus pupil image: an annulus with a central obstruction
        radius = (0.5 + 2.0 * level) * fwhm * k
        h = int(np.ceil(radius)) + 1
        yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
        rr = np.hypot(yy, xx)
        kern = ((rr <= radius) & (rr >= 0.45 * radius)).astype(float)
    else:  # pragma: no cover - checked by the caller
        msg = f"unknown defect {defect!r}"
        raise ValueError(msg)
    return kern / kern.sum()


class EffectivePSF:
    """
    A pixel-integrated PSF sampled on a grid ``OVERSAMPLE`` times finer than
    the pixels, out to ``radius`` pixels; stamps are interpolated from it.
    """

    def __init__(
        self,
        fwhm,
        radius,
        *,
        model="moffat",
        beta=2.5,
        ellipticity=0.0,
        theta=0.0,
        defect=None,
        defect_level=0.0,
        defect_angle=0.0,
    ):
        k = OVERSAMPLE
        self.fwhm = float(fwhm)
        self.radius = int(radius)
        kernel = _defect_kernel(defect, defect_level, fwhm, k, defect_angle)
        pad = 0 if kernel is None else kernel.shape[0] // 2
        half = (self.radius + 1) * k + (k // 2) + pad
        g = np.arange(-half, half + 1) / k
        fine = psf_profile(
            g[None, :],
            g[:, None],
            fwhm,
            model=model,
            beta=beta,
            ellipticity=ellipticity,
            theta=theta,
        )
        if kernel is not None:
            fine = signal.fftconvolve(fine, kernel, mode="same")
        # pixel integration: mean over a 1-pixel box (k fine samples)
        box = np.ones(k) / k
        fine = signal.fftconvolve(fine, box[None, :], mode="same")
        fine = signal.fftconvolve(fine, box[:, None], mode="same")
        cut = k // 2 + pad
        self.grid = np.ascontiguousarray(fine[cut:-cut, cut:-cut]) if cut else fine
        self.centre = (self.grid.shape[0] - 1) // 2  # grid index of offset 0

    def pixel_psf(self, half):
        """The PSF centred on a pixel, (2 half + 1)**2 pixels, sum 1."""
        c, k = self.centre, OVERSAMPLE
        sl = slice(c - half * k, c + half * k + 1, k)
        img = self.grid[sl, sl]
        return img / img.sum()

    def stamps(self, fy, fx, half):
        """Stamps of shape (n, 2 half + 1, 2 half + 1), each summing to 1."""
        k, c = OVERSAMPLE, self.centre
        offs = np.arange(-half, half + 1, dtype=float)
        gy = (offs[None, :] - fy[:, None]) * k + c
        gx = (offs[None, :] - fx[:, None]) * k + c
        iy = np.floor(gy).astype(np.intp)
        ix = np.floor(gx).astype(np.intp)
        wy = (gy - iy)[:, :, None]
        wx = (gx - ix)[:, None, :]
        iy = iy[:, :, None]
        ix = ix[:, None, :]
        grid = self.grid
        out = (
            grid[iy, ix] * (1 - wy) * (1 - wx)
            + grid[iy + 1, ix] * wy * (1 - wx)
            + grid[iy, ix + 1] * (1 - wy) * wx
            + grid[iy + 1, ix + 1] * wy * wx
        )
        out /= out.sum(axis=(1, 2), keepdims=True)
        return out


class Canvas:
    """Collects stamps and adds them to an image with one `numpy.bincount`."""

    def __init__(self, shape):
        self.shape = shape
        self.index = []
        self.value = []

    def add(self, stamps, iy, ix):
        """Stamps (n, s, s) centred on integer pixels (iy, ix)."""
        ny, nx = self.shape
        half = stamps.shape[1] // 2
        offs = np.arange(-half, half + 1)
        yy = iy[:, None, None] + offs[None, :, None]
        xx = ix[:, None, None] + offs[None, None, :]
        ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        self.index.append((yy * nx + xx)[ok])
        self.value.append(stamps[ok])

    def image(self):
        ny, nx = self.shape
        if not self.index:
            return np.zeros(self.shape)
        out = np.bincount(
            np.concatenate(self.index), weights=np.concatenate(self.value), minlength=ny * nx
        )
        self.index, self.value = [], []
        return out.reshape(ny, nx)


def add_stamps(canvas, epsf, x, y, flux, half):
    """Render point sources at (x, y) with total ``flux`` each, in chunks."""
    if len(x) == 0:
        return
    iy = np.rint(y).astype(np.intp)
    ix = np.rint(x).astype(np.intp)
    fy = y - iy
    fx = x - ix
    s = 2 * half + 1
    step = max(1, _CHUNK // (s * s))
    for start in range(0, len(x), step):
        sl = slice(start, start + step)
        st = epsf.stamps(fy[sl], fx[sl], half) * flux[sl, None, None]
        canvas.add(st, iy[sl], ix[sl])


def _b_n(n):
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n**2)


def sersic_stamps(half, fy, fx, params, *, oversample=3):
    """
    Pixel-integrated (by ``oversample``) disc + bulge Sersic stamps, each sum 1.

    ``fy, fx`` are the sub-pixel offsets (n,); ``params`` a dict of (n,)
    arrays: r_disc, q_disc, r_bulge, q_bulge, bulge_fraction, theta.
    """
    s = 2 * half + 1
    o = oversample
    sub = (np.arange(s * o) - (s * o - 1) / 2.0) / o
    yy = sub[None, :, None] - fy[:, None, None]
    xx = sub[None, None, :] - fx[:, None, None]
    c = np.cos(params["theta"])[:, None, None]
    sn = np.sin(params["theta"])[:, None, None]
    u = xx * c + yy * sn
    v = -xx * sn + yy * c
    img = np.zeros((len(fy), s * o, s * o))
    fb = params["bulge_fraction"][:, None, None]
    for n_index, r_key, q_key, weight in (
        (1.0, "r_disc", "q_disc", 1 - fb),
        (4.0, "r_bulge", "q_bulge", fb),
    ):
        r_eff = np.maximum(params[r_key], 1e-3)[:, None, None]
        q = params[q_key][:, None, None]
        r = np.sqrt(u**2 + (v / q) ** 2) / r_eff
        prof = np.exp(-_b_n(n_index) * (r ** (1.0 / n_index) - 1.0))
        total = prof.sum(axis=(1, 2), keepdims=True)
        img += weight * prof / np.maximum(total, 1e-300)
    img = img.reshape(len(fy), s, o, s, o).mean(axis=(2, 4))
    return img / img.sum(axis=(1, 2), keepdims=True)
