"""The NDJSON encoder: orjson's compact lines, escaped to ASCII, equal to the json module's."""

from __future__ import annotations

import json

import pytest

from engine.events import ConnectionClosed, HttpTransaction
from engine.records import connection_record, dumps, http_record, join_line, line, split_line
from tests.captures import PCAPS, all_captures, replay_file
from tui.cli import DEMO_CAPTURE


def reference(record: dict) -> bytes:
    """What the json module writes for the record: compact, every non-ASCII character escaped."""
    return json.dumps(record, separators=(",", ":")).encode("ascii")


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "\x1b[2J\x07",  # C0 controls: escaped by both encoders
        "\x9b31m",  # a C1 control: UTF-8 would carry it to the terminal as is
        "caf\xe9 \xff",  # Latin-1 text from the wire
        "\u2028",  # not Latin-1, but a record may hold any str
    ],
)
def test_a_line_is_ascii_and_reads_back_as_the_text(value: str) -> None:
    record = {"type": "http", "connection": 7, "request": {"target": value}}
    out = line(record)
    assert out.isascii() and b"\n" not in out
    assert json.loads(out) == record
    assert out == reference(record)


def test_what_orjson_refuses_is_written_by_the_json_module() -> None:
    record = {"type": "connection", "id": 1, "bytes": {"client": 2**70}, "name": "\ud800"}
    assert json.loads(line(record)) == json.loads(reference(record))
    assert dumps(record) == reference(record)


def test_the_id_is_filled_in_last() -> None:
    record = {"type": "connection", "id": 3, "state": "CLOSED"}
    kind, conn_id, rest = split_line(record)
    assert (kind, conn_id) == ("connection", 3)
    assert json.loads(join_line(kind, 41, rest)) == {"type": "connection", "id": 41, "state": "CLOSED"}
    assert json.loads(join_line(*split_line({"type": "connection", "id": 0}))) == {"type": "connection", "id": 0}


CAPTURES = [str(PCAPS / name) for name in all_captures()] + [str(DEMO_CAPTURE)]


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.rsplit("/", 2)[-1])
def test_every_record_of_every_capture_equals_the_json_modules(path: str) -> None:
    records = []
    for event in replay_file(path).events:
        if isinstance(event, ConnectionClosed):
            records.append(connection_record(event.info))
        elif isinstance(event, HttpTransaction):
            records.append(http_record(event))
    for record in records:
        out = line(record)
        assert out.isascii()
        assert json.loads(out) == json.loads(reference(record))
