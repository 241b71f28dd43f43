# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``aeqa demo`` and the shipped pretrained model."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable
from astropy.utils.exceptions import AstropyUserWarning

from astro_aeqa import AEQualityEvaluator, conf
from astro_aeqa.cli import main
from astro_aeqa.evaluator import default_model_path
from astro_aeqa.exceptions import ModelFileError
from astro_aeqa.simulation import simulate_image


def test_pretrained_model_is_shipped_calibrated_and_scores_a_frame():
    ev = AEQualityEvaluator.pretrained(device="cpu")
    assert ev.is_fitted and ev.model_name == "small"
    assert ev.reference_scores_ is not None and ev.n_reference_ >= 1000
    dataset = ev.training_["dataset"]
    assert dataset["pixel_scale_arcsec"] == [0.2, 15.0] and dataset["fwhm_pix"] == [1.5, 4.0]
    clean = ev.evaluate(simulate_image((256, 256), seed=5).ccd)
    # zero-shot, a frame mostly above the reference is masked against its own
    # clean majority, with a warning that names calibrate
    with pytest.warns(AstropyUserWarning, match="calibrate"):
        cloudy = ev.evaluate(simulate_image((256, 256), background="cloud", level=0.8, seed=5).ccd)
    assert cloudy.threshold_method == "self"
    assert cloudy.score > clean.score
    assert clean.masked_fraction < 0.1


def test_default_model_config_item_and_missing_file(tmp_path):
    assert default_model_path().name == "aeqa_small_default.safetensors"
    with conf.set_temp("default_model", str(tmp_path / "nothing.safetensors")):
        with pytest.raises(ModelFileError, match="nothing.safetensors.*missing.*astro_aeqa.cfg"):
            AEQualityEvaluator.pretrained()


def test_demo_writes_frames_masks_figures_and_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["-q", "demo", "-o", str(out), "--size", "512", "--fine-tune-steps", "4"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "demo_summary.ecsv" in printed
    summary = QTable.read(out / "demo_summary.ecsv")
    assert list(summary["frame"][:5]) == [
        "fwhm_0.7",
        "fwhm_1.0",
        "fwhm_1.3",
        "fwhm_1.6",
        "fwhm_2.0",
    ]
    assert set(summary["defect"]) == {"none", "cloud", "moon", "shutter"}
    sweep = summary[summary["defect"] == "none"]
    # the worst seeing scores above the best
    assert sweep["score"][-1] > sweep["score"][0]
    for name in ("cloud", "moon", "shutter"):
        with fits.open(out / f"{name}_aeqa.fits") as hdul:
            assert {"MASK", "AEQA_SCORE", "AEQA_FLAGS"} <= {h.name for h in hdul}
        assert (out / f"{name}_aeqa.png").stat().st_size > 0
    assert (out / "score_vs_fwhm.png").exists()
    defects = summary[summary["defect"] != "none"]
    assert np.all(defects["score"] > sweep["score"][0])
    # a second run refuses to overwrite, with a one-line error
    assert main(argv) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_demo_rejects_bad_size(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--size", "100"]) == 2
    assert "--size must be a multiple of 64" in capsys.readouterr().err


def test_info_without_a_model_prints_the_shipped_model_card(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "aeqa_small_default.safetensors" in out
    assert "training data" in out and "pixel_scale_arcsec" in out
    # its clean frames mix cameras: the PSF term waits for a survey's calibration
    assert "PSF term        on, not calibrated" in out
    assert main(["info", "default", "--json"]) == 0
    assert '"model_name": "small"' in capsys.readouterr().out


def test_train_init_default_fine_tunes_the_shipped_model(tmp_path):
    from safetensors.numpy import load_file

    refs = tmp_path / "refs"
    refs.mkdir()
    for i in range(2):
        simulate_image((512, 512), seed=40 + i).write(refs / f"ref_{i}.fits")
    out = tmp_path / "tuned.safetensors"
    argv = ["-q", "train", str(refs), "--init", "default", "--output", str(out)]
    argv += ["--n-epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--seed", "3"]
    assert main(argv) == 0
    tuned = AEQualityEvaluator.load(out)
    assert tuned.training_["init"]["file"] == default_model_path().name
    # the weights started from the shipped ones and moved
    shipped, new = load_file(str(default_model_path())), load_file(str(out))
    assert shipped.keys() == new.keys()
    assert any(not np.array_equal(shipped[k], new[k]) for k in shipped)
    assert tuned.reference_scores_ is not None
