"""numpy's BLAS kept to one thread while the Predictor works, so it never competes with torch's.

numpy and scipy ship their own OpenBLAS, whose worker threads keep spinning for a while after each
product; torch runs its operators on its own OpenMP threads. On a 2-core machine a click's post-
processing alternates the two (``np.tensordot`` in the resampling of each instance, torch's mask
refiner on the next one), and every torch operator then waited for cores the idle OpenBLAS threads
were spinning on: measured (``miqsam benchmark``, 2 cores) a 256x256x128 click took 410 ms instead
of 271 ms and a 128^3 click 130 instead of 88 ms. The numpy products here are small (per-instance
boxes), so one thread costs them nothing. ``threadpoolctl`` (the joblib / scikit-learn project's
library) sets the limit at run time and restores it after. The limit is per process: numpy work that
another thread does meanwhile (napari's, while the widget's worker embeds) also runs on one BLAS
thread until the call returns.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


@functools.lru_cache(maxsize=1)
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # finds the BLAS libraries loaded so far (numpy's, scipy's)


def one_blas_thread(fn: F) -> F:
    """Run ``fn`` with every loaded BLAS library limited to one thread (restored afterwards)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _controller().limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
