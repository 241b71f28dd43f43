# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""One progress bar for every long job, switched off by ``progress_bar=False``."""

__all__ = ["progress_bar"]


def progress_bar(iterable=None, *, enabled=True, total=None, desc=None, unit="it", leave=False):
    """
    Wrap ``iterable`` in a tqdm bar written to stderr, or return it unchanged.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over.
    enabled : bool, optional
        Show the bar. When `False` the iterable is returned as it is.
    total : int, optional
        Number of items, when ``iterable`` has no length.
    desc : str, optional
        Label in front of the bar.
    unit : str, optional
        Name of one item.
    leave : bool, optional
        Keep the finished bar on screen.
    """
    if not enabled:
        return iterable if iterable is not None else _NullBar()
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)


class _NullBar:
    """Stands in for a manual tqdm bar (``update``/``close``) when bars are off."""

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
