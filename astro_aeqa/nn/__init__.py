# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The autoencoder: architecture, training, reconstruction and model files.

This is the only subpackage that imports torch at module level. It works on
float32 numpy arrays and tensors, never on CCDData or FITS.
"""

from .model import PRESETS, AutoencoderConfig, ConvAutoencoder, build_model, init_weights
from .reconstructor import (
    PRECISIONS,
    Reconstructor,
    native_bfloat16,
    reconstruct,
    resolve_device,
    set_torch_threads,
    torch_threads,
    weights_sha,
)
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
    split_patches,
    train_autoencoder,
    weighted_mse_loss,
)

# The API; the other names are imported from here by the package and may change.
__all__ = ["AutoencoderConfig", "PRESETS", "Reconstructor"]
