# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Package-level behaviour: light import, version, flags, config, CLI basics."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import astro_aeqa
from astro_aeqa.cli import main
from astro_aeqa.flags import AEQAFlags, decode_flags, flag_descriptions, flag_header_cards
from astro_aeqa.utils import atomic_write, check_2d_float, check_fraction, nanmedian


def test_import_does_not_load_torch_or_astroquery():
    code = (
        "import sys, astro_aeqa, astro_aeqa.simulation, astro_aeqa.flags;"
        "print(sorted(m for m in ('torch', 'astroquery') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_matches_cli(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"aeqa {astro_aeqa.__version__}"


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_flags_are_distinct_powers_of_two():
    values = [value for _, value, _ in flag_descriptions()]
    assert len(set(values)) == len(values)
    assert all(value & (value - 1) == 0 for value in values)
    assert max(values) < 2**16  # the plane is uint16


def test_flag_cards_fit_fits_headers():
    from astropy.io import fits

    header = fits.Header()
    for card in flag_header_cards():
        header.append(card)
    header.tostring()  # raises if a card does not fit 80 characters
    assert header["AEQAFB0"] == "LOW_QUALITY"


def test_docs_flag_table_matches_registry():
    text = (Path(__file__).parents[1] / "docs" / "fits_layout.rst").read_text()
    for name, value, descr in flag_descriptions():
        assert re.search(rf"- {value}\n\s+- ``{name}``\n\s+- {re.escape(descr)}", text), name


def test_decode_flags_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown flag 'CLOUDY'"):
        decode_flags(np.zeros(2, np.uint16), "CLOUDY")
    assert decode_flags(np.array([AEQAFlags.SATURATED]), "saturated").tolist() == [True]


def test_atomic_write_refuses_to_overwrite_and_cleans_up(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic_write(target) as tmp:
            tmp.write_text("new")
    assert target.read_text() == "precious"
    with pytest.raises(RuntimeError):
        with atomic_write(target, overwrite=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "precious"
    assert list(tmp_path.iterdir()) == [target]


def test_check_helpers_name_the_argument():
    with pytest.raises(ValueError, match="level must lie in"):
        check_fraction(1.5, "level")
    with pytest.raises(ValueError, match="data must be a 2-D image"):
        check_2d_float(np.zeros((2, 3, 4)))
    assert check_2d_float(np.ones((3, 3), dtype=np.int16)).dtype == np.float32


def test_config_defaults():
    assert astro_aeqa.conf.device == "auto"
    assert astro_aeqa.conf.gaia_table == "gaiadr3.gaia_source"


def test_thread_pool_runs_inline_with_one_worker_and_raises_task_errors():
    import threading

    from astro_aeqa.utils import thread_pool

    with thread_pool(1) as pool:
        assert pool.submit(threading.current_thread).result() is threading.current_thread()
        failed = pool.submit(int, "not a number")
    with pytest.raises(ValueError, match="invalid literal"):
        failed.result()
    with thread_pool(2) as pool:
        assert pool.submit(threading.current_thread).result() is not threading.current_thread()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize(
    ("shape", "axis"), [((40, 7), -1), ((30, 700), 1), ((6, 5, 4), 0), ((5, 0), -1)]
)
def test_nanmedian_is_numpys_without_warnings(shape, axis, dtype):
    # slices without NaN are vectorised, the others sorted: NumPy's values
    # (odd and even counts, inf among them), and no warning for an all-NaN
    # slice (warnings are errors here)
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 100.0, shape).astype(dtype)
    if dtype is not np.int64 and a.size:
        a[rng.random(shape) < 0.02] = np.nan
        a[rng.random(shape) < 0.01] = np.inf
        a[rng.random(shape) < 0.01] = -np.inf
        a[:2] = np.nan  # all-NaN slices
    ours = nanmedian(a, axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's all-NaN warning
        expected = np.nanmedian(a, axis=axis) if a.shape[axis] else np.full(ours.shape, np.nan)
    np.testing.assert_array_equal(ours, np.asarray(expected, ours.dtype))
