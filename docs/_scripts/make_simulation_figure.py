# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Make ``docs/figures/simulation.png``: a clean field, a cloudy field with its
truth contour, and a FWHM sweep (0.5, 1.0, 2.0 arcsec) of one star field.

Run from the repository root: ``python docs/_scripts/make_simulation_figure.py``
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy import units as u  # noqa: E402

from astro_aeqa.simulation import PAPER_2P5M, simulate_image  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "figures" / "simulation.png"


def _show(ax, data, title, lo=None, hi=None):
    if lo is None:
        lo, hi = np.percentile(data, [5, 99.7])
    ax.imshow(
        np.arcsinh((data - lo) / (0.05 * (hi - lo))),
        origin="lower",
        cmap="gray",
        vmin=0,
        vmax=np.arcsinh(20),
    )
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return lo, hi


def main():
    shape = (384, 384)
    kw = {"instrument": PAPER_2P5M, "seed": 7}
    clean = simulate_image(shape, fwhm=0.8 * u.arcsec, **kw)
    cloudy = simulate_image(shape, fwhm=0.8 * u.arcsec, background="cloud", level=0.7, **kw)
    fig, axes = plt.subplots(1, 5, figsize=(13, 3.0))
    lo, hi = _show(axes[0], clean.ccd.data, 'clean, FWHM 0.8"')
    _show(axes[1], cloudy.ccd.data, "cloud, level 0.7", lo, hi)
    cs = axes[1].contour(cloudy.truth, levels=[0.2, 0.4], colors=["gold", "red"], linewidths=0.8)
    axes[1].clabel(cs, fontsize=6)
    # zoom on a group of stars: the densest 96 x 96 box of the catalogue
    cat = clean.catalog
    counts, ys, xs = np.histogram2d(cat["y"], cat["x"], bins=8, range=[[0, 384], [0, 384]])
    iy, ix = np.unravel_index(np.argmax(counts), counts.shape)
    cy = int(np.clip(ys[iy] + 24, 48, 336))
    cx = int(np.clip(xs[ix] + 24, 48, 336))
    sub = (slice(cy - 48, cy + 48), slice(cx - 48, cx + 48))
    for ax, fwhm in zip(axes[2:], (0.5, 1.0, 2.0), strict=True):
        sim = simulate_image(shape, fwhm=fwhm * u.arcsec, **kw)
        _show(ax, sim.ccd.data[sub], f'FWHM {fwhm}" (zoom)', lo, lo + 4 * (hi - lo))
    fig.suptitle(
        'astro_aeqa.simulation, PAPER_2P5M (2.5 m, 0.2267"/pix, 60 s, V sky 20.0)', fontsize=10
    )
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=64)
    print(OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
