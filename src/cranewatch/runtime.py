"""Process-wide runtime settings the edges make around a run, never the library (a program
that embeds cranewatch keeps its own garbage-collector settings): the command line around a
command (``cli.main``; ``monitor`` is one long run), the console around each run it starts
(``web.app``: a server's lifetime is not one run)."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

# A young collection once 200 k more objects were made than freed: a 1 M-packet run needs
# none, and garbage caught in reference cycles (rare) waits at most that long (~20 MB).
GC_YOUNG_THRESHOLD = 200_000
_gc_lock = threading.Lock()
_gc_runs: list[tuple[int, ...]] = []  # the settings before the first of the runs under way


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while analysing.

    A run makes millions of short-lived objects (events, chunks) and few reference cycles;
    at the default threshold (a young collection every 700 new objects) the collector took
    ~9 % of an analysis, walking the same live flows and detector state again and again.
    Objects that exist before the run (modules, decoders) are set aside from collection
    (``gc.freeze``). The previous settings come back when the last of the runs under way
    (the web server may run several in threads) ends.
    """
    with _gc_lock:
        if not _gc_runs:
            old = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(old[0], GC_YOUNG_THRESHOLD), *old[1:])
            _gc_runs.append(old)
        else:
            _gc_runs.append(_gc_runs[0])
    try:
        yield
    finally:
        with _gc_lock:
            settings = _gc_runs.pop()
            if not _gc_runs:
                gc.set_threshold(*settings)
                gc.unfreeze()
