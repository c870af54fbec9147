"""The in-memory history store: ids, bounds by count, bytes and age, and epochs."""

import random

import pytest

from qsse_core import HistoryPolicy, MemoryHistory
from qsse_core._history import _EVICTED_TOPICS, EPOCH_MAX


def test_ids_are_one_sequence_across_topics():
    store = MemoryHistory()
    assert 1 <= store.epoch <= EPOCH_MAX and store.last_id == 0
    assert [store.append(t, t, b"x", 1, 0.0) for t in ("a", "b", "a")] == [1, 2, 3]
    events, evicted = store.since("a", "a", 0, 0.0)
    assert [e.id for e in events] == [1, 3] and evicted == 0
    assert store.since("a", "a", 1, 0.0)[0][0].id == 3
    assert store.since("a", "a", 3, 0.0) == ([], 0)
    assert store.since("never", "never", 0, 0.0) == ([], 0)


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
    events, evicted = store.since("t", "t", 0, 0.0)
    assert [e.id for e in events] == kept
    assert evicted == (kept[0] - 1 if kept else 10)


def test_age_bound_and_per_topic_policies():
    store = MemoryHistory(HistoryPolicy(max_events=100), {"fresh": HistoryPolicy(max_age=5.0)})
    store.append("fresh", "fresh", b"old", 0, now=100.0)
    store.append("fresh", "fresh", b"new", 0, now=104.0)
    store.append("kept", "kept", b"old", 0, now=100.0)
    events, evicted = store.since("fresh", "fresh", 0, now=106.0)  # the first is 6 s old
    assert [e.data for e in events] == [b"new"] and evicted == 1
    assert [e.data for e in store.since("kept", "kept", 0, now=1000.0)[0]] == [b"old"]


def test_policies_refuse_nonsense():
    with pytest.raises(ValueError, match="bounds must be >= 0"):
        HistoryPolicy(max_events=-1)
    with pytest.raises(ValueError, match="max_age must be positive"):
        HistoryPolicy(max_age=0)


def test_random_epochs_differ():
    assert MemoryHistory().epoch != MemoryHistory().epoch


def test_epochs_ignore_the_applications_random_seed():
    # An application (or its tests) seeding ``random`` must not make two stores share an
    # epoch: the second would vouch for positions the first issued.
    random.seed(1)
    first = MemoryHistory()
    random.seed(1)
    assert MemoryHistory().epoch != first.epoch


def test_a_store_takes_no_caller_chosen_epoch():
    # A recreated in-memory store has lost its events, so it cannot keep an epoch.
    with pytest.raises(TypeError):
        MemoryHistory(epoch=7)  # type: ignore[call-arg]


def test_eviction_is_reported_per_concrete_topic():
    store = MemoryHistory(HistoryPolicy(max_events=5))
    store.append("ride.*", "ride.1", b"x", 0, 0.0)  # id 1
    for _ in range(40):  # ids 2..41, other rides: they push ride.1's event out
        store.append("ride.*", "ride.2", b"x", 0, 0.0)
    store.append("ride.*", "ride.1", b"y", 0, 0.0)  # id 42
    # ride.1 lost nothing after 1: only ride.2's events were evicted after it.
    events, evicted = store.since("ride.*", "ride.1", 1, 0.0)
    assert [e.id for e in events] == [42] and evicted == 1
    # The whole pattern did lose ids up to 37; so does a pattern matching ride.2.
    assert store.since("ride.*", "ride.*", 1, 0.0)[1] == 37
    assert store.since("ride.*", "ride.[2]", 1, 0.0)[1] == 37
    assert [e.id for e in store.since("ride.*", "ride.[2]", 36, 0.0)[0]] == [38, 39, 40, 41]


def test_forgotten_topics_fold_into_a_conservative_floor():
    store = MemoryHistory(HistoryPolicy(max_events=0))
    for i in range(_EVICTED_TOPICS + 10):
        store.append("ride.*", f"ride.{i}", b"x", 0, 0.0)  # id i + 1, evicted at once
    # ride.0's entry was folded away: its loss is overstated (never understated).
    assert store.since("ride.*", "ride.0", 0, 0.0)[1] >= 1
    assert store.since("ride.*", f"ride.{_EVICTED_TOPICS + 9}", 0, 0.0)[1] == _EVICTED_TOPICS + 10
    assert len(store._topics["ride.*"].evicted) == _EVICTED_TOPICS
