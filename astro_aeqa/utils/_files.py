# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Checksums and atomic writes of tables and figures."""

import hashlib

from ._atomic import atomic_write

__all__ = ["file_sha256", "write_table_atomic", "save_figure_atomic"]


def file_sha256(path):
    """
    Return the SHA-256 hex digest of a file, read in 1 MB blocks.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from astro_aeqa.utils import file_sha256
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "empty"
    >>> _ = path.write_bytes(b"")
    >>> file_sha256(path)[:16]
    'e3b0c44298fc1c14'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_table_atomic(table, path, *, overwrite=False):
    """Write an `~astropy.table.Table` as ECSV, atomically; return ``path``."""
    with atomic_write(path, overwrite=overwrite) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path


def save_figure_atomic(fig, path, *, overwrite=False, dpi=100, close=False):
    """
    Save a matplotlib figure as PNG, atomically; return ``path``.

    With ``close`` the figure is closed afterwards, even when saving fails.
    """
    try:
        with atomic_write(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return path
