# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Figures of docs/real_data.rst: a large smooth cloud scored zero-shot and
against a camera reference, and a real all-sky camera calibrated on one
clear frame.

Run from the repository root (about a minute)::

    python docs/_scripts/make_real_figures.py
"""

import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.visualization import ImageNormalize, ZScaleInterval  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _scenes import scene  # noqa: E402

from astro_aeqa import AEQualityEvaluator  # noqa: E402

FIGURES = ROOT / "docs" / "figures"
CAMERA = ROOT / "tests" / "data" / "camera"


def show(ax, image, mask=None, truth=None, title=""):
    finite = np.nan_to_num(image)
    ax.imshow(
        image, origin="lower", cmap="gray", norm=ImageNormalize(finite, interval=ZScaleInterval())
    )
    if truth is not None:
        ax.contour(truth, levels=[0.2], colors="tab:cyan", linewidths=1)
    if mask is not None and mask.any():
        ax.contour(mask, levels=[0.5], colors="tab:red", linewidths=1.2)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def cloud_figure():
    zero_shot = AEQualityEvaluator.pretrained(device="cpu")
    calibrated = AEQualityEvaluator.pretrained(device="cpu")
    calibrated.calibrate([scene("clean", seed=100 + i)[0] for i in range(2)], progress_bar=False)
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.4), layout="constrained")
    for row, kind in zip(axes, ("cloud_bright", "cloud_dim_stars"), strict=True):
        ccd, truth = scene(kind, seed=11, cover=0.8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res0 = zero_shot.evaluate(ccd)
        res1 = calibrated.evaluate(ccd)
        label = "brightens the sky" if kind == "cloud_bright" else "only dims the stars"
        show(row[0], ccd.data, truth=truth, title=f"80 % cloud that {label}\n(cyan: truth > 0.2)")
        show(row[1], ccd.data, res0.mask, truth, f"zero-shot: {res0.masked_fraction:.0%} masked")
        show(
            row[2],
            ccd.data,
            res1.mask,
            truth,
            f"camera reference: {res1.masked_fraction:.0%} masked",
        )
    fig.savefig(FIGURES / "real_cloud.png", dpi=80)


def allsky_figure():
    ev = AEQualityEvaluator.pretrained(device="cpu")
    ev.calibrate(CAMERA / "iceact_images_starry.fits.bz2", progress_bar=False)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    for ax, name in zip(axes, ("starry", "cloudy"), strict=True):
        res = ev.evaluate(CAMERA / f"iceact_images_{name}.fits.bz2")
        from astropy.io import fits

        data = fits.getdata(CAMERA / f"iceact_images_{name}.fits.bz2").astype(float)
        show(
            ax,
            data,
            res.mask,
            None,
            f"IceAct, {name}: {res.mask[res.footprint].mean():.0%} of the footprint masked",
        )
        ax.contour(res.footprint, levels=[0.5], colors="tab:green", linewidths=1)
    fig.savefig(FIGURES / "real_allsky.png", dpi=80)


if __name__ == "__main__":
    cloud_figure()
    allsky_figure()
    print(f"wrote {FIGURES / 'real_cloud.png'} and {FIGURES / 'real_allsky.png'}")
