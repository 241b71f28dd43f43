# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``aeqa info``: print the model card of a model file."""

import json
import logging
import math
from pathlib import Path

import numpy as np

__all__ = ["register", "run", "model_card"]

log = logging.getLogger(__name__)

_QUANTILES = (0.5, 0.99, 0.999)


def register(subparsers):
    parser = subparsers.add_parser(
        "info",
        help="print the model card of a model file",
        description=(
            "Print the model card of a model file without building the network: architecture "
            "and parameter count, patch and tile size, normalisation, score aggregate, sky term, "
            "calibration, training provenance, package version and sha256."
        ),
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        default="default",
        help="model file (*.safetensors); default: the shipped pretrained model",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the metadata as JSON (calibration as its summary only)",
    )
    parser.set_defaults(func=run)
    return parser


def _preset_name(config):
    from ..nn import PRESETS

    for name, preset in PRESETS.items():
        if preset.to_dict() == config:
            return name
    return "custom"


def _calibration_summary(calibration):
    if not calibration:
        return None
    scores = np.asarray(calibration.get("reference_scores", []), dtype=float)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        return None
    n_reference = int(calibration.get("n_reference", scores.size))
    return {
        "n_reference": n_reference,
        "n_stored": int(scores.size),
        "quantiles": {f"{q:g}": float(np.quantile(scores, q)) for q in _QUANTILES},
    }


def model_card(path):
    """
    Return the model card of a model file as a dict (no network is built).

    Raises
    ------
    FileNotFoundError, astro_aeqa.exceptions.ModelFileError
        If there is no file, or it is not an astro_aeqa model.
    """
    from ..nn import read_model_metadata

    if str(path) == "default":
        from ..evaluator import default_model_path

        path = default_model_path()
    meta = read_model_metadata(path)
    aeqa = meta["aeqa"]
    return {
        "file": str(path),
        "sha256": meta["sha256"],
        "format_version": meta["format_version"],
        "model_name": aeqa.get("model_name", "custom"),
        "architecture": _preset_name(meta["config"]),
        "config": meta["config"],
        "n_parameters": meta["n_parameters"],
        "patch_size": aeqa.get("patch_size"),
        "tile_size": aeqa.get("tile_size"),
        "overlap": aeqa.get("overlap"),
        "normalization": aeqa.get("normalization"),
        "aggregate": aeqa.get("aggregate"),
        "sky_term": aeqa.get("sky_term"),
        "star_aware": aeqa.get("star_aware"),
        "psf_term": aeqa.get("psf_term"),
        "psf_calibration": aeqa.get("psf_calibration"),
        "reference_fwhm": aeqa.get("reference_fwhm"),
        "fpr": aeqa.get("fpr"),
        "morphology": aeqa.get("morphology"),
        "calibration": _calibration_summary(aeqa.get("calibration")),
        "camera": _camera_summary(aeqa.get("camera")),
        "trails": aeqa.get("trails"),
        "training": aeqa.get("training") or {},
        "package_version": aeqa.get("package_version"),
        "saved": aeqa.get("saved"),
        "quality": _quality(path, meta["sha256"]),
    }


def _camera_summary(camera):
    """The camera reference without its per-patch maps, or None."""
    if not camera:
        return None
    summary = {k: v for k, v in camera.items() if k not in ("sky_map", "coverage", "star_map")}
    summary["maps"] = camera.get("sky_map") is not None
    return summary


def _camera_line(camera):
    if camera is None:
        return (
            "none: zero-shot (each patch judged against its own frame); calibrate() on clean frames"
        )
    exptime = "" if camera["exptime"] is None else f" in {camera['exptime']:g} s"
    maps = (
        f", patch maps for {camera['shape'][0]}x{camera['shape'][1]} frames"
        if camera["maps"]
        else ""
    )
    stars = (
        "no source density"
        if camera.get("star_density") is None
        else f"{camera['star_density']:.3g} sources per patch"
    )
    return (
        f"{camera['n_frames']} clean frames: sky {camera['sky_level']:.4g}{exptime}, noise "
        f"{camera['noise']:.3g}, tolerance {camera['sky_tolerance']:.0%}, {stars}{maps}"
    )


def _quality(path, sha256):
    """Benchmark numbers of this very file, from ``<stem>.card.json`` beside it, if any."""
    card = Path(path).with_name(Path(path).name.removesuffix(".safetensors") + ".card.json")
    if not card.is_file():
        return None
    quality = json.loads(card.read_text())
    return quality if quality.get("sha256") == sha256 else None


def _value(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _psf_term(card):
    if not card["psf_term"]:
        return "off"
    if card["psf_calibration"] is None:
        return "on, not calibrated: unused until calibrate() on clean frames of one survey"
    scale = card["psf_calibration"]
    return f"on (clean median {scale['psf_median']:.3g}, MAD {scale['psf_mad']:.3g})"


def _ceil_2_digits(value):
    """``value`` rounded up to two significant digits."""
    scale = 10.0 ** (1 - math.floor(math.log10(value)))
    return math.ceil(value * scale) / scale


def _print_card(card):
    config = ", ".join(f"{k}={v}" for k, v in card["config"].items())
    lines = [
        f"model file      {card['file']}",
        f"sha256          {card['sha256']}",
        f"architecture    {card['architecture']} ({config})",
        f"parameters      {card['n_parameters']:,}",
        f"patch size      {_value(card['patch_size'])} px",
        f"tile size       {_value(card['tile_size'])} px (overlap {_value(card['overlap'])} px)",
        f"normalisation   {_value(card['normalization'])}",
        f"aggregate       {_value(card['aggregate'])}",
        f"sky term        {_value(card['sky_term'])}",
        f"star-aware      {_value(card['star_aware'])}",
        f"PSF term        {_psf_term(card)}",
        f"reference FWHM  {_value(card['reference_fwhm'])} px",
        f"camera ref.     {_camera_line(card['camera'])}",
        f"trail search    {'off' if card['trails'] is False else 'on'}",
        f"default fpr     {_value(card['fpr'])}",
        f"morphology      {_value(card['morphology'])} (opening, closing iterations)",
    ]
    cal = card["calibration"]
    if cal is None:
        lines.append("calibration     none (thresholds fall back to each frame's median + k MAD)")
    else:
        quantiles = ", ".join(f"{float(q):.1%}: {v:.4g}" for q, v in cal["quantiles"].items())
        lines.append(
            f"calibration     {cal['n_reference']:,} clean reference patch scores; "
            f"quantiles {quantiles}"
        )
        fpr, n_stored = card["fpr"], cal["n_stored"]
        if fpr and fpr < 1 / (n_stored + 1):
            lowest = _ceil_2_digits(1 / (n_stored + 1))
            lines.append(
                f"{'':16}too few for the default fpr {fpr:g} (it needs "
                f"{math.ceil(1 / fpr - 1)}): pass --fpr {lowest:g} or more"
            )
    training = card["training"]
    if training:
        lines.append("training")
        keys = [
            ("n_frames", "frames"),
            ("n_epochs_run", "epochs run"),
            ("best_epoch", "best epoch (0-based)"),
            ("best_val_loss", "best val loss"),
            ("final_train_loss", "final train loss"),
            ("n_train_patches", "train patches"),
            ("n_val_patches", "val patches"),
            ("learning_rate", "learning rate"),
            ("batch_size", "batch size"),
            ("seed", "seed"),
            ("seconds", "seconds"),
        ]
        for key, label in keys:
            if key in training:
                lines.append(f"  {label:<22}{_value(training[key])}")
        init = training.get("init")
        if init:
            lines.append(
                f"  {'fine-tuned from':<22}{init.get('file')} (sha256 {init.get('sha256_16')}...)"
            )
        dataset = training.get("dataset")
        if dataset:
            lines.append(f"  {'training data':<22}{dataset.get('description', '-')}")
            for key, value in dataset.items():
                if key != "description":
                    lines.append(f"    {key:<24}{value}")
        refs = training.get("references")
        if refs:
            more = f" (+{len(refs) - 5} more)" if len(refs) > 5 else ""
            lines.append(f"  {'references':<22}{', '.join(refs[:5])}{more}")
    else:
        lines.append("training        no provenance recorded")
    quality = card.get("quality")
    if quality:
        lines.append(f"quality         {quality.get('benchmark', '')}")
        for key, value in quality.get("results", {}).items():
            lines.append(f"  {key:<22}{_value(value)}")
    lines.append(
        f"astro_aeqa      {_value(card['package_version'])} "
        f"(saved {_value(card['saved'])}, format version {card['format_version']})"
    )
    print("\n".join(lines))


def run(args):
    card = model_card(args.model)
    if args.json:
        print(json.dumps(card, indent=2))
    else:
        _print_card(card)
    return 0
