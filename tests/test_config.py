import pytest

from qsse_core import Limits, ReconnectPolicy


def test_backoff_grows_caps_and_jitters_both_ways():
    policy = ReconnectPolicy(interval=0.5, backoff=2.0, max_interval=3.0, jitter=0.2)
    assert [policy.delay(n, 0.5) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(1, 0.0) == pytest.approx(0.4)
    assert policy.delay(1, 0.999999) == pytest.approx(0.6, abs=1e-5)


def test_attempts_per_outage():
    assert ReconnectPolicy(max_attempts=2).allows(2)
    assert not ReconnectPolicy(max_attempts=2).allows(3)
    assert ReconnectPolicy(max_attempts=None).allows(10**6)
    assert not ReconnectPolicy(retry=False).allows(1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backoff": 0.5}, "backoff must be >= 1, got 0.5"),
        ({"jitter": 2.0}, r"jitter must be within \[0, 1\], got 2.0"),
        ({"max_attempts": -1}, "max_attempts must be >= 0 or None, got -1"),
    ],
)
def test_reconnect_policy_refuses_nonsense(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReconnectPolicy(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_queued_bytes": 0}, "Limits.max_queued_bytes must be positive, got 0"),
        ({"flush_interval": -1}, "Limits.flush_interval must be >= 0, got -1"),
        ({"slow_consumer": "ignore"}, "Limits.slow_consumer must be 'disconnect' or 'drop'"),
    ],
)
def test_limits_refuse_nonsense(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)
