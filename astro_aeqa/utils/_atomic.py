# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Atomic file writes: a reader never sees a half-written file."""

import contextlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path

__all__ = ["atomic_write", "write_hdulist_atomic", "clean_stale_temporaries", "check_writable_dir"]

log = logging.getLogger(__name__)

# Temporary files are ``.<final name>.aeqa-<random>.tmp`` beside the final file.
_TMP_INFIX = ".aeqa-"
_TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(r"^\..+\.aeqa-[A-Za-z0-9_]+\.tmp$")
#: A temporary file of ours older than this (seconds) was left by a killed run.
STALE_AFTER = 3600.0


def clean_stale_temporaries(directory, *, max_age=STALE_AFTER):
    """
    Remove the hidden temporary files that a killed write left in ``directory``.

    Only files named as `atomic_write` names them (``.<name>.aeqa-<random>.tmp``)
    and not modified for ``max_age`` seconds are removed; a write in progress
    keeps its file fresh.

    Parameters
    ----------
    directory : str or `~pathlib.Path`
        The directory; nothing happens if it does not exist.
    max_age : float, optional
        Age in seconds (default one hour).

    Returns
    -------
    removed : list of `~pathlib.Path`
        The files removed.
    """
    directory = Path(directory)
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not _TMP_NAME.match(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if now - entry.stat(follow_symlinks=False).st_mtime < max_age:
                continue
            os.unlink(entry.path)
        except OSError:  # gone already, or not ours to remove
            continue
        removed.append(Path(entry.path))
        log.info("removed %s, a temporary file left by an interrupted run", entry.path)
    return removed


def check_writable_dir(directory):
    """
    Create ``directory`` if needed and check that files can be written in it.

    Call it before long work, so that a read-only or mistyped output
    directory is found at once.

    Parameters
    ----------
    directory : str or `~pathlib.Path`

    Returns
    -------
    directory : `~pathlib.Path`

    Raises
    ------
    NotADirectoryError
        If ``directory`` (or a parent) is an existing file.
    PermissionError
        If files cannot be created in it.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        msg = f"{directory}: exists and is a file, not a directory; choose another output directory"
        raise NotADirectoryError(msg)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".aeqa-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError) as exc:
        msg = f"{directory}: a part of this path is a file, not a directory ({exc.strerror})"
        raise NotADirectoryError(msg) from exc
    except OSError as exc:
        msg = (
            f"{directory}: cannot write files in this directory ({exc.strerror}); "
            "choose another output directory or fix its permissions"
        )
        raise PermissionError(msg) from exc
    return directory


def _publish(tmp, path, overwrite):
    """Move ``tmp`` onto ``path``; without ``overwrite`` the final name is created exclusively."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path exists, even when another process just made it
    except FileExistsError as exc:
        msg = (
            f"{path}: file exists (written meanwhile by another run?); "
            "pass overwrite=True to replace it"
        )
        raise FileExistsError(msg) from exc
    except OSError as exc:  # no hard links on this file system: best effort
        log.debug("no hard link for %s (%s); renaming", path, exc)
        if path.exists():
            msg = f"{path}: file exists; pass overwrite=True to replace it"
            raise FileExistsError(msg) from exc
        os.replace(tmp, path)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path, *, overwrite=False):
    """
    Context manager that yields a temporary path next to ``path`` and moves
    it onto ``path`` when the block succeeds.

    Without ``overwrite`` the final name is created exclusively (a hard
    link), so of two runs writing the same file at once one fails with
    `FileExistsError` instead of silently replacing the other's file.
    Temporary files that a killed run left beside ``path`` (older than an
    hour) are removed first.

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
        msg = f"{path}: file exists; pass overwrite=True to replace it"
        raise FileExistsError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}{_TMP_INFIX}", suffix=_TMP_SUFFIX, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the usual umask permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        _publish(tmp, path, overwrite)
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
