# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The error raised when an optional dependency is not installed."""

from ..exceptions import AEQAError

__all__ = ["_MissingDependency"]


class _MissingDependency(AEQAError, ImportError):
    """An optional package is not installed (the CLI shows it as a one-line error)."""
