# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The autoencoder: architecture, training, inference and model files.

This is the only subpackage that imports torch at module level. It works on
float32 numpy arrays and tensors, never on CCDData or FITS.
"""

from .inference import native_bfloat16, reconstruct, torch_threads
from .model import PRESETS, AutoencoderConfig, ConvAutoencoder, build_model, init_weights
from .serialization import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_PARAMETERS,
    load_model,
    read_model_metadata,
    save_model,
    validate_model_metadata,
)
from .training import (
    TrainingHistory,
    resolve_device,
    split_patches,
    train_autoencoder,
    weighted_mse_loss,
)

__all__ = [
    "AutoencoderConfig",
    "PRESETS",
    "ConvAutoencoder",
    "build_model",
    "init_weights",
    "resolve_device",
    "TrainingHistory",
    "split_patches",
    "train_autoencoder",
    "weighted_mse_loss",
    "reconstruct",
    "torch_threads",
    "native_bfloat16",
    "FORMAT_VERSION",
    "FORMAT_NAME",
    "save_model",
    "load_model",
    "read_model_metadata",
    "validate_model_metadata",
    "MAX_PARAMETERS",
]
