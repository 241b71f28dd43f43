# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
What an evaluator keeps in its model file besides the weights: its options,
calibration and training provenance (the metadata of
`astro_aeqa.nn.save_model`), and where the default model file lies.
"""

import importlib.resources
import time
from pathlib import Path

from .config import conf
from .exceptions import ModelFileError
from .nn import PRESETS, AutoencoderConfig

__all__ = ["DEFAULT_MODEL_FILE", "default_model_path"]

#: File name of the pretrained ``small`` model in ``astro_aeqa/data``.
DEFAULT_MODEL_FILE = "aeqa_small_default.safetensors"

# Evaluator options a model file keeps, restored by load().
_SAVED_OPTIONS = (
    "patch_size",
    "tile_size",
    "overlap",
    "crop_size",
    "normalization",
    "aggregate",
    "sky_term",
    "star_aware",
    "psf_term",
    "trails",
    "fpr",
)


def default_model_path():
    """
    Path of the default model file: ``conf.default_model``, or the shipped one.

    Raises
    ------
    astro_aeqa.exceptions.ModelFileError
        If the file does not exist.
    """
    if conf.default_model:
        path = Path(conf.default_model).expanduser()
        fix = "fix or empty the default_model item of astro_aeqa.cfg"
    else:
        path = Path(str(importlib.resources.files("astro_aeqa") / "data" / DEFAULT_MODEL_FILE))
        fix = "reinstall astro_aeqa, or run scripts/train_default_model.py in a source checkout"
    if not path.is_file():
        msg = f"{path}: the default model file is missing; {fix}"
        raise ModelFileError(msg)
    return path


def model_config(model):
    """The model name and `~astro_aeqa.nn.AutoencoderConfig` of a preset name or a config."""
    if isinstance(model, str):
        if model not in PRESETS:
            msg = f"model must be one of the presets {sorted(PRESETS)} or an AutoencoderConfig, got {model!r}"
            raise ValueError(msg)
        return model, PRESETS[model]
    if isinstance(model, AutoencoderConfig):
        return "custom", model
    msg = f"model must be a preset name or an AutoencoderConfig, got {type(model).__name__}"
    raise TypeError(msg)


def metadata(ev):
    """The model file metadata of an evaluator (JSON-ready)."""
    from . import __version__

    calibration = ev.calibration_.to_dict()
    return {
        "package_version": __version__,
        "model_name": ev.model_name,
        "patch_size": ev.patch_size,
        "tile_size": ev.tile_size,
        "overlap": ev.overlap,
        "crop_size": ev.crop_size,
        "normalization": ev.normalization,
        "aggregate": ev.aggregate,
        "sky_term": ev.sky_term,
        "star_aware": ev.star_aware,
        "psf_term": ev.psf_term,
        "trails": ev.trails,
        "psf_calibration": calibration["psf_calibration"],
        "reference_fwhm": ev.reference_fwhm_,
        "fpr": ev.fpr,
        "morphology": list(ev.morphology),
        "camera": calibration["camera"],
        "calibration": calibration["calibration"],
        "training": ev.training_,
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def options(meta, path, *, patch_size=None, **overrides):
    """
    The evaluator options a model file holds, with ``overrides``.

    Raises
    ------
    astro_aeqa.exceptions.ModelFileError
        If ``patch_size`` is not the one the model was calibrated with.
    """
    stored = meta.get("patch_size")
    if patch_size is not None and stored is not None and int(patch_size) != int(stored):
        msg = (
            f"{path}: the model was calibrated with patch_size={stored}, not {patch_size}; "
            f"load it with patch_size={stored}, or load it and call calibrate(clean_frames) "
            "after setting the new patch size"
        )
        raise ModelFileError(msg)
    options = {key: meta[key] for key in _SAVED_OPTIONS if meta.get(key) is not None}
    if meta.get("morphology") is not None:
        options["morphology"] = tuple(meta["morphology"])
    # A file from before star-aware scoring was calibrated without it. One
    # from before the PSF term has no scale for it, so the term stays
    # unused until calibrate() or fit() sets one.
    options.setdefault("star_aware", False)
    options.update(overrides)
    return options


def training_summary(ev, history, frames, learning_rate, batch_size):
    """The training provenance kept in the model file (``ev.training_``)."""
    return {
        "n_frames": len(frames),
        "n_epochs_run": len(history.train_loss),
        "best_epoch": int(history.best_epoch),
        "final_train_loss": float(history.train_loss[-1]) if history.train_loss else None,
        "best_val_loss": float(min(history.val_loss)) if history.val_loss else None,
        "n_train_patches": int(history.n_train_patches),
        "n_val_patches": int(history.n_val_patches),
        "seconds": float(history.seconds),
        "learning_rate": float(learning_rate),
        "batch_size": int(batch_size),
        "seed": ev.seed,
        "shapes": [list(frame.shape) for frame in frames[:20]],
        "fwhm_pixels": ev.reference_fwhm_,
    }
