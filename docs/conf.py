# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Sphinx configuration of the astro_aeqa documentation."""

import datetime
from importlib import metadata

from sphinx_astropy.conf.v3 import *  # noqa: F403

project = "astro_aeqa"
author = "The astro_aeqa developers"
copyright = f"{datetime.datetime.now().year}, {author}"
release = metadata.version("astro_aeqa")
version = ".".join(release.split(".")[:2])

exclude_patterns += ["_build", "**.ipynb_checkpoints"]  # noqa: F405
html_title = f"{project} v{release}"
html_static_path = []
nitpicky = True
nitpick_ignore_regex = [
    ("py:class", r"(optional|default|array[-_ ]like|callable|iterable|path-like|file-like).*"),
    ("py:class", r"numpy\..*"),
    ("py:class", r"torch\..*"),
]
intersphinx_mapping.update(  # noqa: F405
    {
        "ccdproc": ("https://ccdproc.readthedocs.io/en/latest/", None),
        "photutils": ("https://photutils.readthedocs.io/en/stable/", None),
        "torch": ("https://pytorch.org/docs/stable/", None),
    }
)
# No network here or in CI: never fetch inventories. Cross-references to
# other projects' objects render as plain text.
intersphinx_mapping.clear()  # noqa: F405
suppress_warnings = ["intersphinx"]
