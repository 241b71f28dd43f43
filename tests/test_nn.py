# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The autoencoder: architecture, training, checkpoints, inference and model files."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from astro_aeqa.exceptions import ModelFileError
from astro_aeqa.nn import (
    FORMAT_VERSION,
    PRESETS,
    AutoencoderConfig,
    build_model,
    load_model,
    read_model_metadata,
    reconstruct,
    resolve_device,
    save_model,
    split_patches,
    train_autoencoder,
    weighted_mse_loss,
)

TINY = AutoencoderConfig(base_channels=4, n_res_blocks=1)
FAST = dict(patch_size=32, batch_size=4, steps_per_epoch=6, device="cpu", progress_bar=False)


def _star_field(rng, shape=(96, 96), n_stars=25):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    for y, x, f in zip(
        *rng.uniform(0, shape[0], (2, n_stars)), rng.uniform(0.3, 1, n_stars), strict=True
    ):
        img += f * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 3.0).astype(np.float32)
    return img + 0.02 * rng.standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(42)
    return [_star_field(rng) for _ in range(2)]


def _weights_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- architecture -----------------------------------------------------------


def test_preset_parameter_counts():
    small = sum(p.numel() for p in build_model("small").parameters())
    assert small == PRESETS["small"].n_parameters
    assert 100_000 <= small <= 1_000_000  # a few hundred kB on disk
    # the paper's network (Fig. 2, "around 15 million parameters"), counted without building it
    assert 14.5e6 <= PRESETS["paper"].n_parameters <= 15.3e6
    assert PRESETS["paper"].channels() == [64, 128, 256]


def test_config_round_trips_through_json():
    config = AutoencoderConfig(base_channels=8, n_down=3, n_res_blocks=2, max_channels=32)
    assert AutoencoderConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.channels() == [8, 16, 32, 32]
    with pytest.raises(ValueError, match="unknown autoencoder config keys"):
        AutoencoderConfig.from_dict({"base_channels": 4, "n_heads": 2})
    with pytest.raises(ValueError, match="n_down must be an integer"):
        AutoencoderConfig(n_down=-1)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match=r"unknown model preset 'huge'.*\['paper', 'small'\]"):
        build_model("huge")


@pytest.mark.parametrize("shape", [(32, 32), (64, 48)])
def test_output_shape_equals_input_shape(shape):
    model = build_model(TINY)
    assert model(torch.zeros(3, 1, *shape)).shape == (3, 1, *shape)


def test_sizes_not_multiple_of_downsampling_are_refused():
    model = build_model(TINY)
    with pytest.raises(ValueError, match=r"multiples of 4.*\(33, 32\)"):
        model(torch.zeros(1, 1, 33, 32))
    with pytest.raises(ValueError, match=r"shape \(n, 1, ny, nx\)"):
        model(torch.zeros(32, 32))
    with pytest.raises(ValueError, match="multiples of 4 for this model"):
        reconstruct(model, np.zeros((1, 30, 32), np.float32))


def test_build_model_is_seeded_without_touching_global_rng():
    state = torch.random.get_rng_state()
    assert _weights_equal(build_model(TINY, seed=3), build_model(TINY, seed=3))
    assert not _weights_equal(build_model(TINY, seed=3), build_model(TINY, seed=4))
    assert torch.equal(state, torch.random.get_rng_state())


# --- training ----------------------------------------------------------------


def test_split_patches_holds_out_patches_that_crops_never_touch():
    shapes = [(128, 128), (100, 70)]
    ps = 32
    regions, val = split_patches(shapes, ps, val_fraction=0.3, seed=3)
    assert len(val) == round(0.3 * (16 + 6))
    for i, (ny, nx) in enumerate(shapes):
        allowed = np.zeros((ny - ps + 1, nx - ps + 1), bool)
        for _, y_lo, y_hi, x_lo, x_hi in regions[regions[:, 0] == i]:
            allowed[y_lo : y_hi + 1, x_lo : x_hi + 1] = True
        ys, xs = np.nonzero(allowed)
        for j, vy, vx in val:
            assert vy % ps == 0 and vx % ps == 0
            if j == i:
                assert not np.any((abs(ys - vy) < ps) & (abs(xs - vx) < ps))
    assert len(split_patches([(64, 64)], 32, val_fraction=0.0)[1]) == 1  # at least one
    with pytest.raises(
        ValueError, match=r"images\[0\] has shape \(20, 40\), smaller than patch_size=32"
    ):
        split_patches([(20, 40)], 32)


def test_training_lowers_the_loss(images):
    model = build_model(TINY)
    hist = train_autoencoder(model, images, n_epochs=3, learning_rate=3e-3, patience=None, **FAST)
    assert hist.n_epochs == 3
    assert hist.val_loss[-1] < 0.5 * hist.val_loss[0]
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert hist.n_val_patches == len(hist.val_patches) >= 1
    assert hist.n_train_patches + hist.n_val_patches == 2 * 9
    assert not model.training


def test_same_seed_same_weights_other_seed_differs(images):
    runs = []
    for seed in (0, 0, 1):
        model = build_model(TINY, seed=5)
        train_autoencoder(model, images, n_epochs=1, seed=seed, **FAST)
        runs.append(model)
    assert _weights_equal(runs[0], runs[1])
    assert not _weights_equal(runs[0], runs[2])


def test_non_finite_input_is_refused(images):
    bad = images[1].copy()
    bad[5, 7] = np.nan
    with pytest.raises(ValueError, match=r"images\[1\] has 1 non-finite"):
        train_autoencoder(build_model(TINY), [images[0], bad], n_epochs=1, **FAST)
    weights = [np.ones_like(images[0]), np.full_like(images[1], 2.0)]
    with pytest.raises(ValueError, match=r"weights\[1\] must lie in \[0, 1\]"):
        train_autoencoder(build_model(TINY), images, weights=weights, n_epochs=1, **FAST)
    with pytest.raises(ValueError, match="zero everywhere"):
        train_autoencoder(
            build_model(TINY), images, weights=[np.zeros_like(i) for i in images], **FAST
        )


def test_zero_weight_pixels_do_not_affect_the_loss():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((2, 1, 8, 8)).astype(np.float32))
    y = torch.from_numpy(rng.standard_normal((2, 1, 8, 8)).astype(np.float32))
    w = torch.from_numpy((rng.random((2, 1, 8, 8)) > 0.3).astype(np.float32))
    loss = weighted_mse_loss(y, x, w)
    x2, y2 = x.clone(), y.clone()
    x2[w == 0] = 1e6
    y2[w == 0] = -1e6
    assert torch.equal(weighted_mse_loss(y2, x2, w), loss)
    expected = ((y - x) ** 2)[w > 0].mean()
    torch.testing.assert_close(loss, expected)
    assert torch.equal(weighted_mse_loss(y, x), ((y - x) ** 2).mean())


def test_training_with_weights_ignores_the_masked_values(images):
    # zero weight on one image: its pixel values cannot matter to any loss
    weights = [np.ones_like(images[0]), np.zeros_like(images[1])]
    histories = []
    for other in (images[1], images[1][::-1].copy() * 3):
        model = build_model(TINY)
        histories.append(
            train_autoencoder(model, [images[0], other], weights=weights, n_epochs=1, **FAST)
        )
    # val patches on the zero-weight image count nothing; the train loss only sees image 0 crops
    assert np.isfinite(histories[0].train_loss[0])
    assert histories[0].train_loss == histories[1].train_loss


def test_early_stopping_restores_the_best_epoch(images):
    model = build_model(TINY)
    hist = train_autoencoder(model, images, n_epochs=12, learning_rate=0.3, patience=2, **FAST)
    assert hist.stopped_early
    assert hist.best_epoch == int(np.argmin(hist.val_loss))
    assert hist.n_epochs == hist.best_epoch + 1 + 2 < 12
    # the model left behind is the best epoch's: recompute its validation loss
    tiles = np.stack([images[i][y : y + 32, x : x + 32] for i, y, x in hist.val_patches])
    recon = reconstruct(model, tiles)
    assert np.mean((recon - tiles) ** 2) == pytest.approx(hist.val_loss[hist.best_epoch], rel=1e-4)


def test_checkpoint_resume_equals_uninterrupted_run(images, tmp_path):
    opts = dict(FAST, learning_rate=3e-3, patience=None, seed=7)
    straight = build_model(TINY)
    h_straight = train_autoencoder(straight, images, n_epochs=4, **opts)

    ckpt = tmp_path / "train.ckpt.safetensors"
    resumed = build_model(TINY)
    train_autoencoder(resumed, images, n_epochs=2, checkpoint=ckpt, **opts)
    assert ckpt.exists()
    with open(ckpt, "rb") as fh:
        header = fh.read(20000)
    assert b"pickle" not in header
    resumed = build_model(TINY, seed=99)  # a fresh process would start from other weights
    h_resumed = train_autoencoder(resumed, images, n_epochs=4, checkpoint=ckpt, resume=True, **opts)
    assert _weights_equal(straight, resumed)
    assert h_resumed.train_loss == h_straight.train_loss
    assert h_resumed.val_loss == h_straight.val_loss
    assert h_resumed.best_epoch == h_straight.best_epoch
    assert list(tmp_path.iterdir()) == [ckpt]  # no temporary files left

    with pytest.raises(ValueError, match="batch_size differ"):
        train_autoencoder(
            build_model(TINY),
            images,
            n_epochs=5,
            checkpoint=ckpt,
            resume=True,
            **dict(opts, batch_size=2),
        )


# --- inference -----------------------------------------------------------------


def test_reconstruct_matches_forward_and_bf16_is_close(images):
    model = build_model(TINY, seed=1)
    tiles = np.stack([images[0][:32, :32], images[0][32:64, :32], images[1][:32, 32:64]])
    with torch.no_grad():
        direct = model(torch.from_numpy(tiles[:, None]))[:, 0].numpy()
    out = reconstruct(model, tiles, batch_size=2)
    assert out.dtype == np.float32 and out.shape == tiles.shape
    np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        reconstruct(model, tiles, channels_last=True), direct, rtol=1e-4, atol=1e-5
    )
    # bfloat16 keeps 8 mantissa bits: documented tolerance 2e-2 of the output range
    bf16 = reconstruct(model, tiles, amp_dtype=torch.bfloat16)
    assert np.max(np.abs(bf16 - direct)) < 2e-2 * np.ptp(direct)


# --- devices ---------------------------------------------------------------------


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match=r"device='tpu'.*'auto', 'cpu', 'cuda'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_resolve_device_cuda_without_gpu():
    with pytest.raises(ValueError, match="device='cuda': CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:1")


# --- model files -----------------------------------------------------------------


@pytest.fixture
def model_file(tmp_path):
    model = build_model(TINY, seed=2)
    meta = {"patch_size": 32, "normalisation": {"kind": "minmax"}, "quantiles": [0.1, 0.5]}
    return save_model(tmp_path / "tiny.aeqa.safetensors", model, meta), model, meta


def test_save_load_round_trip(model_file, images):
    path, model, meta = model_file
    loaded, loaded_meta = load_model(path)
    assert loaded_meta == meta
    assert loaded.config == TINY and not loaded.training
    tiles = np.stack([images[0][:32, :32], images[1][32:64, 32:64]])
    np.testing.assert_array_equal(reconstruct(loaded, tiles), reconstruct(model, tiles))
    info = read_model_metadata(path)
    assert info["format_version"] == FORMAT_VERSION
    assert info["config"] == TINY.to_dict()
    assert info["n_parameters"] == TINY.n_parameters
    assert info["aeqa"] == meta and len(info["sha256"]) == 64
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(path, model, meta)
    save_model(path, model, {"patch_size": 64}, overwrite=True)
    assert load_model(path)[1] == {"patch_size": 64}
    with pytest.raises(TypeError, match="JSON-serialisable"):
        save_model(path, model, {"bad": object()}, overwrite=True)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_model(tmp_path / "nope.safetensors")


def test_truncated_or_foreign_bytes_are_a_model_file_error(model_file, tmp_path):
    path, _, _ = model_file
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated.safetensors: not a readable safetensors"):
        load_model(truncated)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"SIMPLE  =                    T" + bytes(100))
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        read_model_metadata(junk)


def test_foreign_safetensors_file_is_a_model_file_error(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(ModelFileError, match="not an astro_aeqa model"):
        load_model(path)


def _write_like_ours(path, tensors, **overrides):
    meta = {"format": "astro_aeqa-model", "format_version": str(FORMAT_VERSION)}
    meta.update(config=json.dumps(TINY.to_dict()), aeqa="{}")
    meta.update(overrides)
    save_file(tensors, str(path), metadata=meta)
    return path


def test_newer_format_version_asks_to_upgrade(model_file, tmp_path):
    _, model, _ = model_file
    path = _write_like_ours(
        tmp_path / "future.safetensors", model.state_dict(), format_version=str(FORMAT_VERSION + 1)
    )
    with pytest.raises(
        ModelFileError, match="newer than this astro_aeqa reads.*upgrade astro_aeqa"
    ):
        load_model(path)


def test_weights_not_matching_config_is_wrong_architecture(tmp_path):
    other = build_model(AutoencoderConfig(base_channels=8, n_res_blocks=1))
    path = _write_like_ours(tmp_path / "mismatch.safetensors", other.state_dict())
    with pytest.raises(ModelFileError, match="wrong architecture.*wrong shape"):
        load_model(path)
    state = dict(build_model(TINY).state_dict())
    state.pop("decoder.6.weight")
    state["extra.weight"] = torch.zeros(1)
    path = _write_like_ours(tmp_path / "keys.safetensors", state)
    with pytest.raises(
        ModelFileError, match="wrong architecture.*missing: decoder.6.weight.*unexpected: extra"
    ):
        load_model(path)


def test_crafted_huge_config_is_refused_before_building(model_file, tmp_path, monkeypatch):
    """Issue 17: a config of 242 G parameters took load() past 14.5 GB."""
    from astro_aeqa.nn import serialization

    _, model, _ = model_file
    built = []
    real = serialization.ConvAutoencoder
    monkeypatch.setattr(
        serialization, "ConvAutoencoder", lambda config: built.append(config) or real(config)
    )
    huge = {"base_channels": 4096, "max_channels": 65536, "n_res_blocks": 200}
    path = _write_like_ours(
        tmp_path / "huge.safetensors", model.state_dict(), config=json.dumps(huge)
    )
    with pytest.raises(ModelFileError, match=r"huge.safetensors: .*max_channels=65536"):
        load_model(path)
    big = {"base_channels": 1024, "max_channels": 4096, "n_res_blocks": 200, "n_down": 2}
    path = _write_like_ours(
        tmp_path / "big.safetensors", model.state_dict(), config=json.dumps(big)
    )
    with pytest.raises(ModelFileError, match=r"big.safetensors: .*more than the limit"):
        load_model(path)
    assert built == []  # nothing was built for either file
    small = _write_like_ours(tmp_path / "small.safetensors", model.state_dict())
    with pytest.raises(ModelFileError, match="more than the limit of 1,000"):
        load_model(small, max_parameters=1000)
    assert built == []
    # a config within the budget that the tensors do not match: only meta-device shapes
    other = json.dumps(AutoencoderConfig(base_channels=8, n_res_blocks=1).to_dict())
    path = _write_like_ours(tmp_path / "other.safetensors", model.state_dict(), config=other)
    with pytest.raises(ModelFileError, match="wrong architecture.*wrong shape"):
        load_model(path)
    assert all(c == AutoencoderConfig(base_channels=8, n_res_blocks=1) for c in built)
    loaded, _ = load_model(small)
    assert _weights_equal(loaded, model)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"aeqa": "[1,2,3]"}, "'aeqa'"),
        ({"aeqa": "[" * 100000}, "'aeqa' is nested too deeply"),
        ({"config": "[" * 100000}, "'config' is nested too deeply"),
        ({"config": "[1]"}, "'config'"),
        ({"aeqa": json.dumps({"calibration": 5})}, "'calibration'"),
        ({"aeqa": json.dumps({"calibration": {"reference_scores": 5}})}, "reference_scores"),
        ({"aeqa": json.dumps({"fpr": "x"})}, "'fpr' is 'x'"),
        ({"aeqa": '{"fpr": NaN}'}, "'fpr'"),
        ({"aeqa": json.dumps({"patch_size": 1.5})}, "'patch_size'"),
        ({"aeqa": json.dumps({"tile_size": 30})}, "'tile_size'"),
        ({"aeqa": json.dumps({"morphology": [1, "a"]})}, "'morphology'"),
        ({"aeqa": json.dumps({"sky_term": "yes"})}, "'sky_term'"),
        ({"aeqa": json.dumps({"psf_calibration": {"mae_median": 1}})}, "'psf_calibration'"),
        ({"aeqa": json.dumps({"training": [1]})}, "'training'"),
        ({"format_version": "one"}, "'format_version'"),
        ({"aeqa": json.dumps({"aggregate": "mode"})}, "'aggregate' is 'mode'"),
    ],
)
def test_damaged_metadata_is_a_model_file_error_naming_file_and_field(
    model_file, tmp_path, overrides, field
):
    _, model, _ = model_file
    path = _write_like_ours(tmp_path / "damaged.safetensors", model.state_dict(), **overrides)
    for reader in (load_model, read_model_metadata):
        with pytest.raises(ModelFileError, match=f"damaged.safetensors: .*{field}"):
            reader(path)


def test_metadata_choices_match_the_evaluator():
    from astro_aeqa import _preprocessing, _scoring
    from astro_aeqa.nn import serialization

    assert serialization._CHOICES["aggregate"] == _scoring.AGGREGATES
    assert serialization._CHOICES["normalization"] == _preprocessing.NORMALIZATIONS


def test_damaged_metadata_through_the_evaluator_and_the_cli(model_file, tmp_path, capsys):
    from astro_aeqa import AEQualityEvaluator
    from astro_aeqa.cli import main

    _, model, _ = model_file
    path = _write_like_ours(
        tmp_path / "cal.safetensors", model.state_dict(), aeqa=json.dumps({"calibration": 5})
    )
    with pytest.raises(ModelFileError, match="cal.safetensors: .*'calibration'"):
        AEQualityEvaluator.load(path)
    assert main(["info", str(path)]) == 2
    assert "cal.safetensors" in capsys.readouterr().err


def test_import_astro_aeqa_does_not_import_torch():
    code = "import sys, astro_aeqa; print('torch' in sys.modules, 'astro_aeqa.nn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_unshuffle_stem_runs_at_reduced_resolution():
    config = AutoencoderConfig(base_channels=8, n_down=1, n_res_blocks=1, unshuffle=4)
    model = build_model(config)
    assert config.multiple == 8
    assert config.n_parameters == sum(p.numel() for p in model.parameters())
    assert model(torch.zeros(2, 1, 32, 48)).shape == (2, 1, 32, 48)
    with pytest.raises(ValueError, match=r"multiples of 8"):
        model(torch.zeros(1, 1, 36, 32))


def test_space_to_depth_layers_match_torch_pixel_shuffles():
    from astro_aeqa.nn.model import _DepthToSpace, _SpaceToDepth

    x = torch.rand(3, 2, 48, 32)
    folded = _SpaceToDepth(8)(x)
    assert torch.equal(folded, torch.nn.functional.pixel_unshuffle(x, 8))
    assert torch.equal(_DepthToSpace(8)(folded), x)
