# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Exceptions and warnings raised by `astro_aeqa`."""

from astropy.utils.exceptions import AstropyUserWarning

__all__ = [
    "AEQAError",
    "InputDataError",
    "ModelFileError",
    "CatalogError",
    "OutputPathError",
    "AEQAWarning",
]


class AEQAError(Exception):
    """Base class of the errors raised by `astro_aeqa`."""


class InputDataError(AEQAError, ValueError):
    """An image cannot be evaluated: wrong shape, dtype, or no valid pixels."""


class ModelFileError(AEQAError, ValueError):
    """A model file is unreadable, from another format version, or not ours."""


class CatalogError(AEQAError, ValueError):
    """A reference catalogue is missing, unreachable or lacks a column."""


class OutputPathError(AEQAError, ValueError):
    """An output file would replace one of the inputs (the same file, also through a link)."""


class AEQAWarning(AstropyUserWarning):
    """A problem that does not stop the evaluation but should be looked at."""
