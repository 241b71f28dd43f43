# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
astro_aeqa: autoencoder image quality evaluation and masking for
astronomical frames.

The top-level namespace is light: ``import astro_aeqa`` does not import
torch or astroquery. The evaluator (which needs torch) is imported on first
use of `AEQualityEvaluator`, `QualityResult` or `aeqa_mask`.
"""

from .config import conf

try:
    from ._version import version as __version__
except ImportError:  # not installed: running from a source tree
    __version__ = "0.1.dev0"

__all__ = ["AEQualityEvaluator", "QualityResult", "aeqa_mask", "conf", "__version__"]

_LAZY = {"AEQualityEvaluator", "QualityResult", "aeqa_mask"}


def __getattr__(name):
    # Lazy so that the simulator, io and validation work without torch loaded.
    if name in _LAZY:
        from . import evaluator

        return getattr(evaluator, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__():
    return sorted(set(globals()) | _LAZY)
