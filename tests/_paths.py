# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Where the real third-party test data lives: ``shared/data/real`` beside the checkout."""

from pathlib import Path

_CANDIDATES = [
    Path(__file__).resolve().parents[2] / "shared" / "data" / "real",
    Path("/work/shared/data/real"),
]
REAL_DATA = next((path for path in _CANDIDATES if path.is_dir()), _CANDIDATES[0])
