"""Run an iterator in a background thread, a few items ahead of its consumer.

Used for the training batches (:func:`dnalm.batches.batch_stream`); any producer whose work
releases the GIL (numpy, file reads, decompression) overlaps with the consumer's.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class _Raised:
    """An exception of the producer, carried to the consumer."""

    def __init__(self, exc: BaseException):
        self.exc = exc


_DONE = object()


def prefetched(items: Iterable[T], depth: int = 2, name: str = "dnalm-prefetch") -> Iterator[T]:
    """Yield the items of ``items`` in order, produced up to ``depth`` ahead in a daemon
    thread (``depth`` 0: produced inline, no thread).

    An exception of the producer is raised in the consumer at the item where it happened.
    Closing the returned generator (``contextlib.closing``, or leaving a ``for`` loop and
    dropping it) stops the thread after the item it is producing and closes ``items``.
    The thread is the only user of ``items`` until then.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer
            put(_Raised(exc))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                q.get_nowait()
            thread.join(timeout=0.05)
        close = getattr(items, "close", None)
        if close is not None:
            close()
