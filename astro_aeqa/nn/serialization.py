# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The model file: one ``.safetensors`` file, never pickled.

The tensors are the weights of the `~astro_aeqa.nn.ConvAutoencoder`. The
safetensors metadata (str to str) holds ``format`` (``'astro_aeqa-model'``),
``format_version``, ``config`` (JSON of `~astro_aeqa.nn.AutoencoderConfig`)
and ``aeqa`` (JSON of the caller's metadata: normalisation, patch size,
calibration, provenance, package version). Loading an untrusted file cannot
run code.
"""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..exceptions import ModelFileError
from ..utils import atomic_write, file_sha256
from .model import AutoencoderConfig, ConvAutoencoder
from .training import resolve_device

__all__ = ["FORMAT_VERSION", "FORMAT_NAME", "save_model", "load_model", "read_model_metadata"]

#: Version of the model-file layout written by this astro_aeqa.
FORMAT_VERSION = 1
#: Value of the ``format`` metadata key of our model files.
FORMAT_NAME = "astro_aeqa-model"


def save_model(path, model, metadata, *, overwrite=False):
    """
    Write ``model`` and ``metadata`` to one ``.safetensors`` file, atomically.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        Output file (conventionally ``*.aeqa.safetensors``).
    model : `~astro_aeqa.nn.ConvAutoencoder`
        The model to save.
    metadata : dict
        JSON-serialisable information stored beside the weights and given
        back by `load_model`.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    `~pathlib.Path`
        The path written.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    TypeError
        If ``metadata`` is not JSON-serialisable.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from astro_aeqa.nn import build_model, load_model, save_model
    >>> model = build_model({"base_channels": 4, "n_res_blocks": 1})
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.aeqa.safetensors"
    >>> _ = save_model(path, model, {"patch_size": 32})
    >>> load_model(path)[1]
    {'patch_size': 32}
    """
    if not isinstance(model, ConvAutoencoder):
        msg = f"model must be a ConvAutoencoder, got {type(model).__name__}"
        raise TypeError(msg)
    try:
        aeqa = json.dumps(dict(metadata), allow_nan=False)
    except (TypeError, ValueError) as exc:
        msg = (
            "metadata must be a JSON-serialisable dict of finite numbers, strings, lists "
            f"and dicts: {exc}"
        )
        raise TypeError(msg) from exc
    header = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(model.config.to_dict()),
        "aeqa": aeqa,
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_write(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def _header(path):
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: model file not found; check the path, or train and save a model first"
        raise FileNotFoundError(msg)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        msg = (
            f"{path}: not a readable safetensors model file (truncated or another format: {exc}); "
            "download or save it again"
        )
        raise ModelFileError(msg) from exc
    if meta.get("format") != FORMAT_NAME:
        msg = (
            f"{path}: a safetensors file but not an astro_aeqa model "
            f"(no format={FORMAT_NAME!r} metadata); "
            "pass a file written by astro_aeqa "
            "(AEQualityEvaluator.save or astro_aeqa.nn.save_model)"
        )
        raise ModelFileError(msg)
    try:
        version = int(meta["format_version"])
        config = json.loads(meta["config"])
        aeqa = json.loads(meta.get("aeqa", "{}"))
    except (KeyError, ValueError) as exc:
        msg = f"{path}: damaged astro_aeqa model metadata ({exc!r}); save the model again"
        raise ModelFileError(msg) from exc
    if version > FORMAT_VERSION:
        msg = (
            f"{path}: model file format version {version} is newer than this astro_aeqa reads "
            f"(version {FORMAT_VERSION}); upgrade astro_aeqa"
        )
        raise ModelFileError(msg)
    try:
        config = AutoencoderConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        msg = (
            f"{path}: the stored architecture config is invalid ({exc});"
            " upgrade astro_aeqa or save it again"
        )
        raise ModelFileError(msg) from exc
    return {"format": FORMAT_NAME, "format_version": version, "config": config, "aeqa": aeqa}, keys


def read_model_metadata(path):
    """
    Read the metadata of a model file without building the model.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The model file.

    Returns
    -------
    dict
        ``format``, ``format_version`` (int), ``config`` (dict), ``n_parameters``,
        ``sha256`` (hex digest of the file) and ``aeqa`` (the metadata given to
        `save_model`).

    Raises
    ------
    FileNotFoundError, `~astro_aeqa.exceptions.ModelFileError`
        As `load_model`.
    """
    header, _ = _header(path)
    config = header["config"]
    return {
        "format": header["format"],
        "format_version": header["format_version"],
        "config": config.to_dict(),
        "n_parameters": config.n_parameters,
        "sha256": file_sha256(path),
        "aeqa": header["aeqa"],
    }


def load_model(path, *, device="cpu"):
    """
    Load a model file written by `save_model` (safetensors only, never unpickled).

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The model file.
    device : str or `torch.device`
        Where to put the weights (see `~astro_aeqa.nn.resolve_device`).

    Returns
    -------
    model : `~astro_aeqa.nn.ConvAutoencoder`
        In ``eval()`` mode, on ``device``.
    metadata : dict
        The metadata given to `save_model`.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    `~astro_aeqa.exceptions.ModelFileError`
        If the file is not a (complete) safetensors file, not an astro_aeqa
        model, from a newer format version, or its weights do not match its
        architecture config.
    """
    header, keys = _header(path)
    device = resolve_device(device)
    model = ConvAutoencoder(header["config"])
    expected = model.state_dict()
    missing = sorted(set(expected) - set(keys))
    unexpected = sorted(set(keys) - set(expected))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in keys}
    except (SafetensorError, OSError, ValueError) as exc:
        msg = (
            f"{path}: the weights cannot be read (truncated file? {exc}); download or save it again"
        )
        raise ModelFileError(msg) from exc
    wrong = sorted(
        k for k in set(keys) & set(expected) if tuple(tensors[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or wrong:
        parts = []
        for label, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong),
        ):
            if names:
                more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
                parts.append(f"{label}: {', '.join(names[:3])}{more}")
        msg = (
            f"{path}: wrong architecture: the weights do not match the stored config "
            f"{header['config'].to_dict()} ({'; '.join(parts)});"
            " the file is damaged or was edited, save it again"
        )
        raise ModelFileError(msg)
    with torch.no_grad():
        model.load_state_dict(tensors)
    model.to(device)
    model.eval()
    return model, header["aeqa"]
