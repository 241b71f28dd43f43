# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""A thread pool that runs its tasks at once, in order, when given one worker."""

from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

__all__ = ["thread_pool"]


class _InlineExecutor:
    """An executor whose ``submit`` runs the task before returning."""

    def submit(self, func, *args, **kwargs):
        future = Future()
        try:
            future.set_result(func(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 (re-raised by result(), as a pool does)
            future.set_exception(error)
        return future


@contextmanager
def thread_pool(workers):
    """
    A ``concurrent.futures.ThreadPoolExecutor`` of ``workers`` threads.

    With one worker no thread is started: each task runs when submitted, so
    a single-core job has no threading overhead and stays deterministic.

    Examples
    --------
    >>> from astro_aeqa.utils import thread_pool
    >>> with thread_pool(1) as pool:
    ...     pool.submit(sum, [1, 2, 3]).result()
    6
    """
    if workers <= 1:
        yield _InlineExecutor()
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        yield pool
    except BaseException:
        pool.shutdown(cancel_futures=True)  # one task failed: the queued ones are moot
        raise
    pool.shutdown()
