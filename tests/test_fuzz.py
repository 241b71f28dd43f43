# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Fuzzing with hypothesis: hostile pixels, shapes, headers, FITS bytes and model files.

The property is the same everywhere: the package returns a result or raises
one of its own exceptions (`astro_aeqa.exceptions.AEQAError`), never
another exception type, and its memory stays bounded. The default run takes
well under a minute (``max_examples`` is small); raise it with
``--hypothesis-profile`` settings of your own for a longer hunt.
"""

import json
import struct
import tracemalloc
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from astro_aeqa.exceptions import AEQAError  # noqa: E402

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same examples on every run: no flaky CI
    database=None,  # no .hypothesis directory in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Beyond the input, frame-sized numpy memory per pixel, plus a constant (bytes).
_BYTES_PER_PIXEL = 400
_CONSTANT = 64 * 2**20


@pytest.fixture(scope="module")
def evaluator():
    """The shipped ``small`` model: no training needed, every scoring term on."""
    from astro_aeqa import AEQualityEvaluator

    return AEQualityEvaluator.pretrained(device="cpu")


def _outcome(call):
    """``call()``, its result or our exception; any other exception fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warnings are allowed; the filter makes them errors
        try:
            return call()
        except AEQAError as exc:
            return exc


def _bounded(call, n_pixels):
    """``_outcome(call)`` with the peak of traced (numpy) memory checked."""
    tracemalloc.start()
    try:
        result = _outcome(call)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < _CONSTANT + _BYTES_PER_PIXEL * n_pixels, f"{peak / 2**20:.0f} MiB"
    return result


# -- pixels -------------------------------------------------------------------

_SHAPES = st.one_of(
    st.tuples(st.integers(1, 80), st.integers(1, 80)),  # from one pixel to a patch or so
    st.tuples(st.integers(64, 200), st.integers(64, 200)),
    st.tuples(st.integers(64, 72), st.integers(1500, 4000)),  # thin strips
    st.tuples(st.integers(1500, 4000), st.integers(64, 72)),
)
_DTYPES = st.sampled_from(
    ["uint8", "int16", "uint16", "int32", "int64", "float32", "float64", "bool", "complex64"]
)
_PATTERNS = st.sampled_from(
    ["none", "all_nan", "random_nan", "nan_rows", "nan_cols", "inf", "-inf", "constant", "huge"]
)


def _frame(shape, dtype, pattern, seed):
    rng = np.random.default_rng(seed)
    data = rng.normal(1000.0, 30.0, shape)
    data[rng.random(shape) < 0.002] += 5e4  # a few bright pixels
    if pattern == "constant":
        data[...] = 7.0
    elif pattern == "huge":
        data *= 1e30
    if np.dtype(dtype).kind in "fc":
        data = data.astype(dtype)
        nan = {"all_nan": np.ones(shape, bool), "random_nan": rng.random(shape) < 0.3}
        mask = nan.get(pattern)
        if pattern == "nan_rows":
            mask = np.zeros(shape, bool)
            mask[:: max(1, shape[0] // 3)] = True
        elif pattern == "nan_cols":
            mask = np.zeros(shape, bool)
            mask[:, :: max(1, shape[1] // 3)] = True
        if mask is not None:
            data[mask] = np.nan
        if pattern in ("inf", "-inf"):
            data[rng.random(shape) < 0.1] = float(pattern)
        return data
    if dtype == "bool":
        return data > 1000
    info = np.iinfo(dtype)
    with np.errstate(invalid="ignore"):  # float64 cannot hold int64's maximum exactly
        return np.clip(data, info.min, info.max).astype(dtype)


@FUZZ
@given(_SHAPES, _DTYPES, _PATTERNS, st.integers(0, 2**16))
def test_evaluate_any_pixels(evaluator, shape, dtype, pattern, seed):
    data = _frame(shape, dtype, pattern, seed)
    result = _bounded(lambda: evaluator.evaluate(data), data.size)
    if not isinstance(result, AEQAError):
        assert result.mask.shape == shape and result.residual.shape == shape
        assert np.isfinite(result.score) or np.isnan(result.score)


# -- header values ------------------------------------------------------------

_KEYS = st.one_of(
    st.sampled_from(["EXPTIME", "AIRMASS", "DATE-OBS", "OBJECT", "HISTORY", "COMMENT"]),
    st.text(min_size=0, max_size=12),
)
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=90),
    st.binary(max_size=20),
    st.complex_numbers(allow_nan=True),
    st.lists(st.integers(), max_size=3),
)


@FUZZ
@given(st.dictionaries(_KEYS, _VALUES, max_size=8))
def test_any_metadata_reads_and_writes(tmp_path_factory, meta):
    from astro_aeqa.io import read_aeqa_fits, read_image, write_aeqa_fits

    ccd = CCDData(np.ones((16, 16), np.float32), unit="adu", meta=meta)
    out = _outcome(lambda: read_image(ccd))
    if isinstance(out, AEQAError):
        return
    path = tmp_path_factory.mktemp("meta") / "out.fits"
    flags = np.zeros((16, 16), np.uint16)
    written = _outcome(lambda: write_aeqa_fits(path, out, score_map=np.zeros((1, 1)), flags=flags))
    if not isinstance(written, AEQAError):
        assert read_aeqa_fits(path).ccd.shape == (16, 16)


def test_mask_with_hostile_metadata(evaluator):
    meta = {"AIRMASS": float("nan"), "SKY": float("-inf"), "OBSERVER": "Zoë\n", "é": 1}
    ccd = CCDData(_frame((128, 128), "float32", "none", 1), unit="adu", meta=meta)
    out = _outcome(lambda: evaluator.mask(ccd))
    assert not isinstance(out, AEQAError)
    fits.PrimaryHDU(header=fits.Header(out.meta)).header.tostring()  # every card is valid


# -- FITS bytes ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fits_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("fits") / "frame.fits"
    header = fits.Header()
    header["EXPTIME"] = (15.0, "s")
    header["BUNIT"] = "adu"
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = 150.0, 2.0
    header["CRPIX1"], header["CRPIX2"] = 40.0, 40.0
    header["CD1_1"], header["CD2_2"] = -1e-4, 1e-4
    data = _frame((80, 80), "uint16", "none", 3)
    hdul = fits.HDUList([fits.PrimaryHDU(data, header=header)])
    hdul.append(fits.ImageHDU(np.zeros((80, 80), np.uint8), name="MASK"))
    hdul.writeto(path)
    return path.read_bytes()


_EDITS = st.lists(
    st.tuples(st.sampled_from(["flip", "byte", "digit", "cut", "junk"]), st.integers(0, 2**31)),
    min_size=1,
    max_size=4,
)


def _corrupt(blob, edits):
    blob = bytearray(blob)
    for kind, where in edits:
        if not blob:
            break
        i = where % len(blob)
        if kind == "flip":
            blob[i] ^= 1 << (where % 8)
        elif kind == "byte":
            blob[i] = where % 256
        elif kind == "digit":  # a header digit or letter: NAXIS, BITPIX, BZERO...
            i = where % min(len(blob), 2880 * 2)
            blob[i] = ord("0123456789-E .T="[where % 16])
        elif kind == "cut":
            del blob[i:]
        else:
            blob[i:i] = bytes((where * 7 + k) % 256 for k in range(where % 300))
    return bytes(blob)


@FUZZ
@given(_EDITS)
def test_corrupted_fits_bytes(tmp_path_factory, fits_bytes, edits):
    from astro_aeqa.io import read_image

    path = tmp_path_factory.mktemp("bad") / "frame.fits"
    path.write_bytes(_corrupt(fits_bytes, edits))
    result = _bounded(lambda: read_image(path), 80 * 80)
    if not isinstance(result, AEQAError):
        assert result.data.ndim == 2


# -- model files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    from astro_aeqa.nn import AutoencoderConfig, build_model, save_model

    path = tmp_path_factory.mktemp("model") / "tiny.aeqa.safetensors"
    model = build_model(AutoencoderConfig(base_channels=4, n_res_blocks=1))
    meta = {"patch_size": 16, "tile_size": 32, "crop_size": 32, "overlap": 4, "fpr": 0.1}
    meta["calibration"] = {"reference_scores": [0.1, 0.2, 0.3], "n_reference": 3}
    save_model(path, model, meta)
    return path.read_bytes()


def _load_everything(path):
    from astro_aeqa import AEQualityEvaluator
    from astro_aeqa.nn import read_model_metadata

    read_model_metadata(path)
    return AEQualityEvaluator.load(path, device="cpu")


@FUZZ
@given(_EDITS)
def test_corrupted_model_bytes(tmp_path_factory, model_bytes, edits):
    # most edits land in the JSON header, where the damage is interesting
    (n,) = struct.unpack("<Q", model_bytes[:8])
    head = [(kind, 8 + where % (n + 8)) for kind, where in edits]
    path = tmp_path_factory.mktemp("badmodel") / "m.aeqa.safetensors"
    path.write_bytes(_corrupt(model_bytes, head))
    _bounded(lambda: _load_everything(path), 0)


_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = st.sampled_from(
    [
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
        "morphology",
        "camera",
        "calibration",
        "psf_calibration",
        "reference_fwhm",
        "training",
        "model_name",
    ]
)
_CONFIG_KEYS = st.sampled_from(
    ["base_channels", "n_down", "n_res_blocks", "max_channels", "in_channels", "norm", "unshuffle"]
)


@FUZZ
@given(
    st.dictionaries(_FIELDS, _JSON, max_size=4), st.dictionaries(_CONFIG_KEYS, _JSON, max_size=2)
)
def test_model_metadata_values(tmp_path_factory, model_bytes, fields, config_fields):
    from safetensors import safe_open
    from safetensors.torch import save_file

    source = tmp_path_factory.mktemp("src") / "m.aeqa.safetensors"
    source.write_bytes(model_bytes)
    with safe_open(str(source), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    aeqa = json.loads(meta["aeqa"])
    aeqa.update(fields)
    config = json.loads(meta["config"])
    config.update(config_fields)
    meta["aeqa"] = json.dumps(aeqa)
    meta["config"] = json.dumps(config)
    path = source.with_name("edited.aeqa.safetensors")
    save_file(tensors, str(path), metadata=meta)
    ev = _bounded(lambda: _load_everything(path), 0)
    if not isinstance(ev, AEQAError):  # what loads also scores
        data = _frame((64, 64), "float32", "none", 0)
        _bounded(lambda: ev.evaluate(data), data.size)
