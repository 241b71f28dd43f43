# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Where the tests find real third-party data: ``tests/data`` in this checkout.

The few small real files the tests need are copied there (see
``tests/data/README.rst`` for their origin and licence), so the suite runs
on a fresh clone. Nothing here looks outside the checkout; the larger
collection in ``shared/data/real`` beside a checkout is for the benchmarks
and the docs figures only.
"""

from pathlib import Path

#: The test data directory of this checkout.
TEST_DATA = Path(__file__).resolve().parent / "data"
#: Kept for the tests that name it: the same directory.
REAL_DATA = TEST_DATA
