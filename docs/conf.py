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
# No network here or in CI, so other projects' inventories are not fetched:
# references to their objects render as plain text instead of warning.
nitpick_ignore_regex = [
    ("py:class", r"(optional|default|array[-_ ]like|callable|iterable|path-like|file-like).*"),
    (
        "py:(obj|class|func|meth|mod|attr|exc|data)",
        r"(astropy|numpy|scipy|pathlib|ccdproc|photutils|torch|dask|distributed|tqdm|matplotlib"
        r"|reproject|astroquery|safetensors)(\..*)?",
    ),
    ("py:(obj|class)", r"(True|False|None|int|float|str|bool|dict|list|tuple)"),
]
automodapi_inheritance_diagram = False
intersphinx_mapping.clear()  # noqa: F405
suppress_warnings = ["intersphinx"]
