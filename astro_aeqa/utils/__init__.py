# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Small helpers shared by the subpackages (numpy and astropy only).

Internal: not part of the API, and free to change.
"""

from ._atomic import atomic_write, check_writable_dir, clean_stale_temporaries, write_hdulist_atomic
from ._files import file_sha256, save_figure_atomic, write_table_atomic
from ._memory import release_free_memory
from ._nanstats import nanmean, nanmedian
from ._progress import progress_bar
from ._threads import thread_pool
from ._validation import (
    check_2d_float,
    check_fraction,
    check_int,
    check_positive_quantity,
    forwarded_property,
)

__all__ = []
