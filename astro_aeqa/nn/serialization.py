# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The model file: one ``.safetensors`` file, never pickled.

The tensors are the weights of the ``ConvAutoencoder``. The
safetensors metadata (str to str) holds ``format`` (``'astro_aeqa-model'``),
``format_version``, ``config`` (JSON of `~astro_aeqa.nn.AutoencoderConfig`)
and ``aeqa`` (JSON of the caller's metadata: normalisation, patch size,
calibration, provenance, package version). Loading an untrusted file cannot
run code.
"""

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..exceptions import ModelFileError
from ..utils import atomic_write, file_sha256
from .model import AutoencoderConfig, ConvAutoencoder
from .reconstructor import resolve_device

__all__ = [
    "FORMAT_VERSION",
    "FORMAT_NAME",
    "MAX_PARAMETERS",
    "save_model",
    "load_model",
    "read_model_metadata",
    "validate_model_metadata",
]

#: Version of the model-file layout written by this astro_aeqa.
FORMAT_VERSION = 1
#: Value of the ``format`` metadata key of our model files.
FORMAT_NAME = "astro_aeqa-model"
#: Largest network ``load_model`` builds by default (the ``paper`` preset has
#: 14.9 million parameters, ``small`` 0.22 million): a file whose stored
#: config asks for more is refused before anything is allocated.
MAX_PARAMETERS = 100_000_000

# Bounds on the stored architecture config, checked before any arithmetic on it.
_CONFIG_LIMITS = {
    "base_channels": 4096,
    "max_channels": 8192,
    "in_channels": 64,
    "unshuffle": 64,
    "n_down": 12,
    "n_res_blocks": 1024,
}
# Bounds on the sizes stored in the metadata (pixels).
_MAX_SIZE = 1 << 16
_MAX_CALIBRATION = 1 << 20


def save_model(path, model, metadata, *, overwrite=False):
    """
    Write ``model`` and ``metadata`` to one ``.safetensors`` file, atomically.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        Output file (conventionally ``*.aeqa.safetensors``).
    model : ``ConvAutoencoder``
        The model to save.
    metadata : dict
        JSON-serialisable information stored beside the weights and given
        back by ``load_model``.
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


def _damaged(path, field, problem):
    msg = (
        f"{path}: damaged astro_aeqa model metadata: {field} {problem}; "
        "save the model again (AEQualityEvaluator.save) or use another file"
    )
    return ModelFileError(msg)


def _json_field(path, meta, key, default=None):
    text = meta.get(key, default)
    if text is None:
        raise _damaged(path, f"field {key!r}", "is missing")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: '[' * 100000
        problem = "is nested too deeply" if isinstance(exc, RecursionError) else "is not JSON"
        raise _damaged(path, f"field {key!r}", f"{problem} ({type(exc).__name__})") from exc


def _check_config(path, config):
    """The stored architecture config, bounded before any arithmetic on it."""
    if not isinstance(config, dict):
        raise _damaged(path, "field 'config'", f"is a {type(config).__name__}, not a JSON object")
    for key, limit in _CONFIG_LIMITS.items():
        value = config.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit
        ):
            msg = (
                f"{path}: the stored architecture config has {key}={value!r}; an integer in "
                f"[0, {limit}] is expected (a damaged or crafted file); save the model again"
            )
            raise ModelFileError(msg)
    try:
        return AutoencoderConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        msg = (
            f"{path}: the stored architecture config is invalid ({exc});"
            " upgrade astro_aeqa or save it again"
        )
        raise ModelFileError(msg) from exc


def _header(path):
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: model file not found; check the path, or train and save a model first"
        raise FileNotFoundError(msg)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            shapes = {
                k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in keys
            }
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
        version = int(meta.get("format_version"))
    except (TypeError, ValueError) as exc:
        raise _damaged(path, "field 'format_version'", "is not an integer") from exc
    if version > FORMAT_VERSION:
        msg = (
            f"{path}: model file format version {version} is newer than this astro_aeqa reads "
            f"(version {FORMAT_VERSION}); upgrade astro_aeqa"
        )
        raise ModelFileError(msg)
    config = _check_config(path, _json_field(path, meta, "config"))
    aeqa = validate_model_metadata(_json_field(path, meta, "aeqa", "{}"), name=path, config=config)
    header = {"format": FORMAT_NAME, "format_version": version, "config": config, "aeqa": aeqa}
    return header, shapes


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_field(name, field, value, kind, **limits):
    """Raise ModelFileError unless ``value`` is of ``kind`` (None always passes)."""
    if value is None:
        return
    low, high = limits.get("low"), limits.get("high")
    if kind == "str":
        ok = isinstance(value, str)
        expected = "a string"
    elif kind == "bool":
        ok = isinstance(value, bool)
        expected = "true or false"
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok and (low is None or value >= low) and (high is None or value <= high)
        expected = f"an integer in [{low}, {high}]"
    elif kind == "fraction":
        ok = _is_number(value) and 0.0 < value < 1.0
        expected = "a number strictly between 0 and 1"
    elif kind == "positive":
        ok = _is_number(value) and value > 0
        expected = "a finite positive number"
    elif kind == "dict":
        ok = isinstance(value, dict)
        expected = "a JSON object"
    else:  # pragma: no cover - a programming error
        raise AssertionError(kind)
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise _damaged(name, f"field {field!r}", f"is {shown}; expected {expected}")


_STR_FIELDS = ("package_version", "model_name", "normalization", "aggregate", "saved")
# The values the evaluator accepts (``astro_aeqa._scoring.AGGREGATES`` and
# ``astro_aeqa._preprocessing.NORMALIZATIONS``; a test keeps them equal).
_CHOICES = {"normalization": ("noise", "minmax"), "aggregate": ("mean", "trimmed_mean", "median")}
_BOOL_FIELDS = ("sky_term", "star_aware", "psf_term")
_PSF_CALIBRATION_KEYS = ("mae_median", "mae_mad", "psf_median", "psf_mad")


def validate_model_metadata(metadata, *, name="the model file", config=None):
    """
    Check the types and ranges of the evaluator fields of a model file's metadata.

    ``load_model`` and `read_model_metadata` call it on every file they read,
    so that damaged or crafted metadata gives a `~astro_aeqa.exceptions.ModelFileError` naming the
    file and the field, never a traceback from the code that uses it. Fields
    it does not know are passed through unchecked.

    Parameters
    ----------
    metadata : dict
        The ``aeqa`` metadata of the file (the dict given to `save_model`).
    name : str or `~pathlib.Path`, optional
        The file, for the messages.
    config : `~astro_aeqa.nn.AutoencoderConfig`, optional
        The file's architecture: ``tile_size`` and ``crop_size`` must then be
        multiples of its `~astro_aeqa.nn.AutoencoderConfig.multiple`.

    Returns
    -------
    metadata : dict
        The same dict.

    Raises
    ------
    `~astro_aeqa.exceptions.ModelFileError`
        If a known field has the wrong type or an impossible value.

    Examples
    --------
    >>> from astro_aeqa.nn.serialization import validate_model_metadata
    >>> validate_model_metadata({"patch_size": 64, "fpr": 0.01})
    {'patch_size': 64, 'fpr': 0.01}
    >>> validate_model_metadata({"fpr": "x"}, name="m.safetensors")
    Traceback (most recent call last):
    ...
    astro_aeqa.exceptions.ModelFileError: m.safetensors: damaged astro_aeqa model metadata: \
field 'fpr' is 'x'; expected a number strictly between 0 and 1; save the model again \
(AEQualityEvaluator.save) or use another file
    """
    if not isinstance(metadata, dict):
        raise _damaged(
            name, "field 'aeqa'", f"is a JSON {type(metadata).__name__}, not a JSON object"
        )
    get = metadata.get
    for field in _STR_FIELDS:
        _check_field(name, field, get(field), "str")
    for field, choices in _CHOICES.items():
        if get(field) is not None and get(field) not in choices:
            shown = repr(get(field))[:40]
            raise _damaged(
                name,
                f"field {field!r}",
                f"is {shown}; expected one of {choices} (a file from a newer astro_aeqa? "
                "upgrade astro_aeqa)",
            )
    for field in _BOOL_FIELDS:
        _check_field(name, field, get(field), "bool")
    _check_field(name, "patch_size", get("patch_size"), "int", low=1, high=_MAX_SIZE)
    unit = 1 if config is None else config.multiple
    for field in ("tile_size", "crop_size"):
        value = get(field)
        _check_field(name, field, value, "int", low=unit, high=_MAX_SIZE)
        if value is not None and value % unit:
            raise _damaged(name, f"field {field!r}", f"is {value}, not a multiple of {unit}")
    overlap, tile = get("overlap"), get("tile_size")
    _check_field(name, "overlap", overlap, "int", low=0, high=_MAX_SIZE)
    if overlap is not None and tile is not None and 2 * overlap >= tile:
        raise _damaged(name, "field 'overlap'", f"is {overlap}, not less than half of tile_size")
    _check_field(name, "fpr", get("fpr"), "fraction")
    _check_field(name, "reference_fwhm", get("reference_fwhm"), "positive")
    morphology = get("morphology")
    if morphology is not None and not (
        isinstance(morphology, list)
        and len(morphology) <= 8
        and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 64 for n in morphology)
    ):
        raise _damaged(name, "field 'morphology'", "is not a list of at most 8 integers in [0, 64]")
    _check_field(name, "training", get("training"), "dict")
    calibration = get("calibration")
    _check_field(name, "calibration", calibration, "dict")
    if calibration:
        scores = calibration.get("reference_scores")
        if not (
            isinstance(scores, list)
            and 0 < len(scores) <= _MAX_CALIBRATION
            and all(_is_number(s) for s in scores)
        ):
            raise _damaged(
                name,
                "field 'calibration.reference_scores'",
                f"is not a list of 1 to {_MAX_CALIBRATION} finite numbers",
            )
        _check_field(
            name,
            "calibration.n_reference",
            calibration.get("n_reference"),
            "int",
            low=1,
            high=2**62,
        )
    psf = get("psf_calibration")
    _check_field(name, "psf_calibration", psf, "dict")
    if psf is not None and not all(_is_number(psf.get(key)) for key in _PSF_CALIBRATION_KEYS):
        raise _damaged(
            name,
            "field 'psf_calibration'",
            f"lacks finite numbers for {', '.join(_PSF_CALIBRATION_KEYS)}",
        )
    return metadata


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
        As ``load_model``.
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


def _expected_shapes(config):
    """Parameter shapes of the network of ``config``, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = ConvAutoencoder(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


def _check_tensors(path, config, shapes, max_parameters):
    """Compare the file's tensor header with the stored config, before building anything."""
    n_parameters = config.n_parameters
    if n_parameters > max_parameters:
        msg = (
            f"{path}: the stored architecture config {config.to_dict()} has {n_parameters:,} "
            f"parameters, more than the limit of {max_parameters:,} (a damaged or crafted file?); "
            "pass max_parameters= a larger number if you trust the file"
        )
        raise ModelFileError(msg)
    # the config is within the budget: its network costs nothing on the meta device
    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(shapes) & set(expected) if shapes[k][0] != expected[k])
    not_float = sorted(k for k, (_, dtype) in shapes.items() if dtype not in _FLOAT_DTYPES)
    if missing or unexpected or wrong or not_float:
        parts = []
        for label, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong),
            ("not floating point", not_float),
        ):
            if names:
                more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
                parts.append(f"{label}: {', '.join(names[:3])}{more}")
        msg = (
            f"{path}: wrong architecture: the weights do not match the stored config "
            f"{config.to_dict()} ({'; '.join(parts)});"
            " the file is damaged or was edited, save it again"
        )
        raise ModelFileError(msg)


def load_model(path, *, device="cpu", max_parameters=MAX_PARAMETERS):
    """
    Load a model file written by `save_model` (safetensors only, never unpickled).

    The stored config and metadata are checked against the tensor shapes in
    the file's header, and the parameter count against ``max_parameters``,
    before the network is built or a weight is read, so a damaged or crafted
    file cannot exhaust memory.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The model file.
    device : str or `torch.device`
        Where to put the weights (see ``resolve_device``).
    max_parameters : int, optional
        Largest network accepted (default ``MAX_PARAMETERS``, 100 million).

    Returns
    -------
    model : ``ConvAutoencoder``
        In ``eval()`` mode, on ``device``.
    metadata : dict
        The metadata given to `save_model`.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    `~astro_aeqa.exceptions.ModelFileError`
        If the file is not a (complete) safetensors file, not an astro_aeqa
        model, from a newer format version, its metadata are damaged (see
        ``validate_model_metadata``), its network is larger than
        ``max_parameters``, or its weights do not match its architecture
        config. The message names the file.
    """
    header, shapes = _header(path)
    config = header["config"]
    _check_tensors(path, config, shapes, max_parameters)
    device = resolve_device(device)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in shapes}
    except (SafetensorError, OSError, ValueError) as exc:
        msg = (
            f"{path}: the weights cannot be read (truncated file? {exc}); download or save it again"
        )
        raise ModelFileError(msg) from exc
    model = ConvAutoencoder(config)
    with torch.no_grad():
        model.load_state_dict(tensors)
    model.to(device)
    model.eval()
    return model, header["aeqa"]
