# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Atomic file writes: a reader never sees a half-written file."""

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "write_hdulist_atomic"]


@contextlib.contextmanager
def atomic_write(path, *, overwrite=False):
    """
    Context manager that yields a temporary path next to ``path`` and renames
    it onto ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The final file name.
    overwrite : bool, optional
        If `False` (default) and ``path`` exists, raise `FileExistsError`
        before anything is written.

    Yields
    ------
    tmp_path : `~pathlib.Path`
        Where the caller writes. It is removed if the block raises.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        msg = f"{path}: file exists; pass overwrite=True (or --overwrite) to replace it"
        raise FileExistsError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the usual umask permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_hdulist_atomic(hdulist, path, *, overwrite=False):
    """
    Write an `~astropy.io.fits.HDUList` to ``path`` atomically.

    Parameters
    ----------
    hdulist : `~astropy.io.fits.HDUList`
        What to write.
    path : str or `~pathlib.Path`
        The output file name.
    overwrite : bool, optional
        Replace an existing file. Default `False`.
    """
    with atomic_write(path, overwrite=overwrite) as tmp:
        # the temporary file exists (mkstemp), so astropy must overwrite it
        hdulist.writeto(tmp, overwrite=True, output_verify="exception")
    return Path(path)
