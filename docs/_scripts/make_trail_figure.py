# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Make ``docs/figures/trails.png``: a simulated star field with a faint
satellite trail (peak 2 sigma per pixel, FWHM 3 pixels), a short faint one
(50 pixels, peak 2 sigma) and a short bright meteor, the trails
``astro_aeqa._trails.find_trails`` finds and the pixel mask of ``astro_aeqa._trails.trail_mask``.

Run from the repository root (a few seconds)::

    python docs/_scripts/make_trail_figure.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from astro_aeqa._preprocessing import sky_statistics  # noqa: E402
from astro_aeqa._trails import find_trails, trail_mask  # noqa: E402
from astro_aeqa.simulation import PAPER_2P5M, simulate_image  # noqa: E402

OUT = Path(__file__).parents[1] / "figures" / "trails.png"
SHORT = (600.0, 250.0, 1.9)


def segment(snr, *, x0, y0, angle, length, fwhm, peak):
    """Add a Gaussian-profile segment of ``peak`` sigma to ``snr``."""
    ny, nx = snr.shape
    yy, xx = np.mgrid[:ny, :nx].astype(np.float32)
    ux, uy = np.cos(angle), np.sin(angle)
    t = (xx - x0) * ux + (yy - y0) * uy
    d = -(xx - x0) * uy + (yy - y0) * ux
    snr += (peak * np.exp(-0.5 * (d / (fwhm / 2.3548)) ** 2) * ((t >= 0) & (t <= length))).astype(
        np.float32
    )


def main():
    sim = simulate_image((768, 768), instrument=PAPER_2P5M, seed=4)
    data = sim.ccd.data.astype(np.float32)
    valid = np.isfinite(data)
    stats = sky_statistics(data, valid)
    snr = (data - stats.level) / stats.noise
    segment(snr, x0=-10, y0=120, angle=0.45, length=1000, fwhm=3.0, peak=2.0)
    segment(snr, x0=480, y0=560, angle=2.6, length=90, fwhm=2.5, peak=12.0)
    # a short faint trail: 50 pixels of peak 2 sigma
    segment(snr, x0=SHORT[0], y0=SHORT[1], angle=SHORT[2], length=50, fwhm=2.0, peak=2.0)
    trails = find_trails(np.where(valid, snr, 0), valid)
    mask = trail_mask(snr.shape, trails)

    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.8), sharex=True, sharey=True)
    kw = {"origin": "lower", "cmap": "gray", "vmin": -2, "vmax": 5, "interpolation": "nearest"}
    axes[0].imshow(snr, **kw)
    axes[0].set_title("S/N: trails of peak 2 sigma (long, 50 px), meteor")
    axes[1].imshow(snr, **kw)
    for row in trails:
        axes[1].plot([row["x0"], row["x1"]], [row["y0"], row["y1"]], "-", color="tab:red", lw=1)
        axes[1].plot([row["x0"], row["x1"]], [row["y0"], row["y1"]], "o", color="tab:red", ms=4)
        axes[1].annotate(
            f"PA {row['theta']:.1f}, FWHM {row['fwhm']:.1f} px\n"
            f"{row['length']:.0f} px, S/N {row['snr']:.0f}",
            (0.5 * (row["x0"] + row["x1"]), 0.5 * (row["y0"] + row["y1"])),
            color="tab:red",
            fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1.5},
            xytext=(8, -24),
            textcoords="offset points",
        )
    axes[1].set_title(f"find_trails: {len(trails)} found")
    axes[2].imshow(snr, **kw)
    overlay = np.zeros((*mask.shape, 4))
    overlay[mask] = (1.0, 0.2, 0.1, 0.8)
    axes[2].imshow(overlay, origin="lower", interpolation="nearest")
    axes[2].set_title(f"trail_mask: {mask.mean():.2%} of the pixels")
    for ax in axes:
        ax.set_xlabel("x [pixel]")
    axes[0].set_ylabel("y [pixel]")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=90)
    print(f"wrote {OUT}")
    print(trails)


if __name__ == "__main__":
    main()
