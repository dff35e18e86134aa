"""dnalm.prefetch: an iterator run ahead in a background thread yields the same items in
order, carries the producer's exception to the consumer, and stops its thread when closed."""

import contextlib
import threading
import time

import pytest

from dnalm.prefetch import prefetched


def threads_named(name):
    return [t for t in threading.enumerate() if t.name == name]


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_same_items_in_order(depth):
    assert list(prefetched(iter(range(100)), depth, name="t-order")) == list(range(100))
    assert list(prefetched([], depth, name="t-order")) == []
    time.sleep(0.2)
    assert not threads_named("t-order")


def test_producer_runs_ahead_by_depth_only():
    made = []

    def items():
        for i in range(50):
            made.append(i)
            yield i

    it = prefetched(items(), 3, name="t-ahead")
    assert next(it) == 0
    time.sleep(0.3)
    assert len(made) <= 1 + 3 + 1  # the item taken, a full queue, one waiting to be put
    it.close()


def test_error_reaches_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise OSError("disk gone")

    it = prefetched(items(), 2, name="t-error")
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(OSError, match="disk gone"):
        next(it)


def test_closing_stops_the_thread_and_closes_the_source():
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    with contextlib.closing(prefetched(endless(), 2, name="t-close")) as it:
        assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
        assert threads_named("t-close")
    assert not threads_named("t-close") and closed == [True]
