"""The in-memory history store: ids, bounds by count, bytes and age, and epochs."""

import pytest

from qsse_core import HistoryPolicy, MemoryHistory


def test_ids_are_one_sequence_across_topics():
    store = MemoryHistory(epoch=7)
    assert store.epoch == 7 and store.last_id == 0
    assert [store.append(t, t, b"x", 1, 0.0) for t in ("a", "b", "a")] == [1, 2, 3]
    events, evicted = store.since("a", 0, 0.0)
    assert [e.id for e in events] == [1, 3] and evicted == 0
    assert store.since("a", 1, 0.0)[0][0].id == 3
    assert store.since("a", 3, 0.0) == ([], 0)
    assert store.since("never", 0, 0.0) == ([], 0)


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        (HistoryPolicy(max_events=3), [8, 9, 10]),
        (HistoryPolicy(max_bytes=25), [9, 10]),  # 10 bytes each: 3 would be 30
        (HistoryPolicy(max_events=0), []),
    ],
)
def test_bounds_evict_oldest_and_say_how_far(policy, kept):
    store = MemoryHistory(policy)
    for _ in range(10):
        store.append("t", "t", b"0123456789", 0, 0.0)
    events, evicted = store.since("t", 0, 0.0)
    assert [e.id for e in events] == kept
    assert evicted == (kept[0] - 1 if kept else 10)


def test_age_bound_and_per_topic_policies():
    store = MemoryHistory(HistoryPolicy(max_events=100), {"fresh": HistoryPolicy(max_age=5.0)})
    store.append("fresh", "fresh", b"old", 0, now=100.0)
    store.append("fresh", "fresh", b"new", 0, now=104.0)
    store.append("kept", "kept", b"old", 0, now=100.0)
    events, evicted = store.since("fresh", 0, now=106.0)  # the first is 6 s old
    assert [e.data for e in events] == [b"new"] and evicted == 1
    assert [e.data for e in store.since("kept", 0, now=1000.0)[0]] == [b"old"]


def test_policies_refuse_nonsense():
    with pytest.raises(ValueError, match="bounds must be >= 0"):
        HistoryPolicy(max_events=-1)
    with pytest.raises(ValueError, match="max_age must be positive"):
        HistoryPolicy(max_age=0)


def test_random_epochs_differ():
    assert MemoryHistory().epoch != MemoryHistory().epoch
