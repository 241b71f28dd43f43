# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Shared fixtures. Tests run against the installed package."""

import matplotlib

matplotlib.use("Agg")

try:
    from pytest_astropy_header.display import PYTEST_HEADER_MODULES

    PYTEST_HEADER_MODULES.clear()
    PYTEST_HEADER_MODULES.update(
        {
            "numpy": "numpy",
            "scipy": "scipy",
            "astropy": "astropy",
            "photutils": "photutils",
            "ccdproc": "ccdproc",
            "torch": "torch",
        }
    )
except ImportError:
    pass
