"""The bounded reader: lines and documents never cost more than their limit plus one chunk."""

from __future__ import annotations

import json
from itertools import pairwise, repeat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protection_rules import loading
from protection_rules.loading import read_requests
from protection_rules.reading import Line, read_limited, split_lines


def counted(chunks):
    """The chunks, and a list that grows by one for each chunk read."""
    taken: list[int] = []

    def source():
        for chunk in chunks:
            taken.append(len(chunk))
            yield chunk

    return source(), taken


@given(
    data=st.lists(st.sampled_from([b"a", b"b", b"\n", b"\r", b" ", b"\x00"]), max_size=300).map(b"".join)
    | st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=12),
)
def test_lines_do_not_depend_on_where_the_chunks_are_cut(data, cuts):
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in pairwise(bounds)]
    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()  # a final newline ends the last line; it does not start another
    lines = list(split_lines(chunks, limit=1000))
    assert [line.data for line in lines] == expected
    assert [line.number for line in lines] == list(range(1, len(expected) + 1))


@given(
    lines=st.lists(st.text(alphabet="xy", max_size=40).map(str.encode), min_size=1, max_size=20),
    chunk=st.integers(min_value=1, max_value=17),
)
def test_an_over_long_line_is_cut_to_the_limit_and_the_next_lines_still_come(lines, chunk):
    data = b"\n".join(lines) + b"\n"
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    got = list(split_lines(chunks, limit=10, skip_limit=1000))
    assert [(line.size, line.data) for line in got] == [(len(raw), raw[:10]) for raw in lines]
    assert all(line.ended for line in got)


def test_a_line_that_never_ends_stops_the_input_after_the_skip_limit():
    chunks, taken = counted(repeat(b"\x00" * 100))
    first, *rest = split_lines(chunks, limit=250, skip_limit=1000)
    assert rest == []
    assert (first.number, first.ended, first.data) == (1, False, b"\x00" * 250)
    # the limit, the skip limit and at most one chunk beyond: never the endless rest
    assert sum(taken) <= 250 + 1000 + 100
    assert first.size == sum(taken)


def test_a_line_that_ends_within_the_skip_limit_lets_the_next_line_through():
    data = b"ok\n" + b"z" * 5000 + b"\nnext"
    chunks = [data[i : i + 64] for i in range(0, len(data), 64)]
    assert list(split_lines(chunks, limit=100, skip_limit=10_000)) == [
        Line(1, b"ok", 2),
        Line(2, b"z" * 100, 5000),
        Line(3, b"next", 4),
    ]


def test_a_document_is_read_to_its_limit_plus_one_chunk_and_no_further():
    chunks, taken = counted(repeat(b"\x00" * 64))
    data, complete = read_limited(chunks, 1000)
    assert not complete
    assert 1000 < len(data) <= 1000 + 64 and sum(taken) == len(data)


# How standard input (`lines=None`) is read, with the document limit lowered to 100 bytes
LINE = json.dumps({"asset": "A"}).encode()
STDIN_CASES = [
    # (input, read as JSON Lines?, the documents' data or error codes)
    (b'{\n  "asset": "A"\n}\n', False, [{"asset": "A"}]),
    (LINE + b"\n" + LINE + b"\n", True, [{"asset": "A"}, {"asset": "A"}]),
    (b"{not json\n" + LINE + b"\n", True, ["json-syntax", {"asset": "A"}]),
    # over the limit: JSON Lines when the first non-blank line is a JSON value by itself
    (b"\n" + (LINE + b"\n") * 20, True, [{"asset": "A"}] * 20),
    (b'{\n  "asset": "' + b"x" * 200 + b'"\n}\n', False, ["file-too-large"]),
    (b"\x00" * 1000, False, ["file-too-large"]),
]


@pytest.mark.parametrize(("data", "lines", "expected"), STDIN_CASES)
def test_standard_input_is_one_document_or_json_lines(monkeypatch, data, lines, expected):
    monkeypatch.setattr(loading, "MAX_DOCUMENT_BYTES", 100)
    found = read_requests([data[i : i + 16] for i in range(0, len(data), 16)], "<stdin>")
    assert found.lines is lines
    assert [doc.issues[0].code if doc.issues else doc.data for doc in found.documents] == expected


def test_json_lines_are_read_lazily(monkeypatch):
    monkeypatch.setattr(loading, "MAX_DOCUMENT_BYTES", 100)
    chunks, taken = counted(repeat(LINE + b"\n"))
    documents = read_requests(chunks, "<stdin>").documents
    assert [next(documents).data for _ in range(3)] == [{"asset": "A"}] * 3
    # the head read to tell a document from JSON Lines, then only what the lines needed
    assert sum(taken) <= 100 + 2 * (len(LINE) + 1)
