# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Configuration items, read from ``astro_aeqa.cfg`` in the astropy config
directory (``~/.astropy/config``).
"""

from astropy import config as _config

__all__ = ["Conf", "conf"]


class Conf(_config.ConfigNamespace):
    """Configuration parameters for `astro_aeqa`."""

    device = _config.ConfigItem(
        "auto",
        "Torch device for the autoencoder: 'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.",
    )
    default_model = _config.ConfigItem(
        "",
        "Path of the model file used when none is given. Empty means the "
        "small model shipped with the package.",
    )
    gaia_table = _config.ConfigItem(
        "gaiadr3.gaia_source",
        "Gaia archive table queried by the validation tools.",
    )
    cache_dir = _config.ConfigItem(
        "",
        "Directory of the on-disk catalogue cache. Empty means the astropy cache directory.",
    )


conf = Conf()
