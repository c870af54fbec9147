import pytest

from qsse_core._topics import TopicTable, is_pattern, topic_matches, validate_pattern

# Cases from Go's path/filepath.Match documentation and tests (Unix separator).
GO_MATCH = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", False),
    ("a*/b", "abc/b", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("[a-ζ]*", "\u03b1", True),  # Greek alpha
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "z", False),
    # qsse's own uses: dots are ordinary characters.
    ("ride.*", "ride.passenger.start", True),
    ("ride.*.start", "ride.passenger.start", True),
    ("ride.*.start", "ride.passenger.cancel", False),
    ("ride.*.status", "ride.42.status", True),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), GO_MATCH)
def test_go_filepath_match(pattern, topic, expected):
    assert topic_matches(pattern, topic) is expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("[", "bad pattern '[': unterminated '['"),
        ("a[", "bad pattern 'a[': unterminated '['"),
        ("[]a]", "bad pattern '[]a]': unexpected ']' in class"),
        ("[-]", "bad pattern '[-]': unexpected '-' in class"),
        ("a\\", "bad pattern 'a\\\\': trailing '\\'"),
        ("[z-a]", "bad pattern '[z-a]': range z-a is empty"),
    ],
)
def test_bad_patterns(pattern, message):
    with pytest.raises(ValueError) as info:
        validate_pattern(pattern)
    assert str(info.value) == message
    assert topic_matches(pattern, "anything") is False  # as Go: no match, no exception


def test_is_pattern():
    assert is_pattern("ride.*") and is_pattern("a?") and is_pattern("[ab]")
    assert not is_pattern("ride.passenger.start")


def test_admit_exact_pattern_and_concrete():
    table = TopicTable(["ride.*.status", "ride.passenger.start", "ride.*"])
    assert table.admit("ride.passenger.start") == "ride.passenger.start"
    assert table.admit("ride.*.status") == "ride.*.status"
    assert table.admit("ride.42.status") == "ride.*.status"
    assert table.admit("ride.x") == "ride.*"
    assert table.admit("driver.location") is None


def test_publish_targets_go_rule_and_concrete_topics():
    table = TopicTable(["ride.a", "ride.b", "ride.*.status", "other"])
    # Go: the published topic is a pattern over the declared names.
    assert table.publish_targets("ride.*") == (
        ("ride.a", "ride.a"),
        ("ride.b", "ride.b"),
        ("ride.*.status", "ride.*.status"),
    )
    assert table.publish_targets("ride.a") == (("ride.a", "ride.a"),)
    # qsse: a concrete topic admitted by a declared pattern goes out as itself.
    assert table.publish_targets("ride.42.status") == (("ride.42.status", "ride.*.status"),)
    assert table.publish_targets("nothing") == ()


@pytest.mark.parametrize(
    ("topics", "message"),
    [
        ([""], "topic names must not be empty"),
        (["error"], "'error' is reserved: qsse/1 sends error events on that topic"),
        (["ok", "bad["], "bad pattern 'bad[': unterminated '['"),
    ],
)
def test_bad_declarations(topics, message):
    with pytest.raises(ValueError) as info:
        TopicTable(topics)
    assert str(info.value) == message
