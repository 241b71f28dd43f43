# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Figures of the quality benchmark, from ``benchmarks/results/quality.json``.

Run from the repository root, after ``python benchmarks/quality.py``::

    python docs/_scripts/make_quality_figures.py [--overwrite]

Writes ``docs/figures/quality_auroc.png`` (patch AUROC per defect and
configuration), ``quality_patch_size.png`` (quality against patch size) and
``quality_fpr.png`` (measured against requested false-mask rate).
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from astro_aeqa.utils import atomic_write  # noqa: E402

SHOWN = {"paper": "paper-faithful", "ours": "ours (default)", "classical": "classical"}


def save(fig, path, overwrite):
    with atomic_write(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def auroc_figure(results, default):
    presets = list(results["presets"])
    fig, axes = plt.subplots(
        1, len(presets), figsize=(5.5 * len(presets), 3.8), layout="constrained"
    )
    axes = [axes] if len(presets) == 1 else axes
    for ax, preset in zip(axes, presets, strict=True):
        configs = results["presets"][preset]["configs"]
        names = {"paper": "paper", default: "ours", "classical": "classical"}
        defects = list(configs["paper"]["defects"])
        width = 0.27
        for k, (key, label) in enumerate(names.items()):
            values = [configs[key]["defects"][d]["auroc"] for d in defects]
            ax.bar(
                [i + (k - 1) * width for i in range(len(defects))],
                values,
                width,
                label=SHOWN[label],
            )
        ax.set_xticks(range(len(defects)), defects, rotation=30)
        ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("patch AUROC")
        ax.set_title(preset)
    axes[0].legend(loc="lower left", fontsize=8)
    return fig


def patch_figure(results):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for preset, rows in results["patch"].items():
        x = [r["fwhm_multiple"] for r in rows]
        axes[0].plot(x, [r["mean_auroc"] for r in rows], "o-", label=preset)
        axes[1].plot(x, [r["mean_iou"] for r in rows], "o-", label=preset)
        for r in rows:
            axes[0].annotate(
                str(r["patch_size"]), (r["fwhm_multiple"], r["mean_auroc"]), fontsize=7
            )
    for ax, label in zip(axes, ("mean patch AUROC", "mean mask IoU"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("patch size / measured FWHM")
        ax.set_ylabel(label)
        ax.axvline(2, color="0.5", ls=":", lw=0.8)
    axes[0].legend()
    axes[0].set_title("labels: patch size in pixels")
    return fig


def fpr_figure(results):
    fig, ax = plt.subplots(figsize=(5.6, 4.4), layout="constrained")
    lo, hi = 5e-4, 0.1
    ax.fill_between([lo, hi], [lo / 2, hi / 2], [2 * lo, 2 * hi], color="0.9", label="within 2x")
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8)
    curves = (
        ("held_out", "fixed_fwhm", "s--", "held-out patches of fit"),
        ("clean_frames", "fixed_fwhm", "o-", "clean frames; test seeing fixed"),
        ("clean_frames", "matched_fwhm", "^-", "clean frames; test seeing matched"),
    )
    for preset, rows in results["fpr"].items():
        for source, test, style, label in curves:
            sub = [
                r
                for r in rows
                if r["calibration"] == source
                and r.get("test", "fixed_fwhm") == test
                and r["threshold"] is not None
            ]
            if sub:
                ax.plot(
                    [r["fpr"] for r in sub],
                    [max(r["mask_rate_morphology_01"], lo / 2) for r in sub],
                    style,
                    label=f"{preset}: {label}",
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo / 2, 2 * hi)
    ax.set_xlabel("requested fpr")
    ax.set_ylabel("mask rate on new clean frames (0 drawn at the bottom)")
    ax.legend(fontsize=6.5)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="benchmarks/results/quality.json")
    parser.add_argument(
        "--section-results",
        default="benchmarks/results/quality_fpr_patch.json",
        help="the fpr and patch sections of a later run (--sections fpr patch), if present",
    )
    parser.add_argument("--out-dir", default="docs/figures")
    parser.add_argument("--default", default="ours", help="the configuration shown as ours")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    results = json.loads(Path(args.results).read_text())
    if Path(args.section_results).exists():
        later = json.loads(Path(args.section_results).read_text())
        results.update({key: later[key] for key in ("fpr", "patch") if later.get(key)})
    out = Path(args.out_dir)
    save(auroc_figure(results, args.default), out / "quality_auroc.png", args.overwrite)
    save(patch_figure(results), out / "quality_patch_size.png", args.overwrite)
    save(fpr_figure(results), out / "quality_fpr.png", args.overwrite)


if __name__ == "__main__":
    main()
