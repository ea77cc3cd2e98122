"""The server's log lines (controller/logs.py): one event a line, no secrets, and no value
from the wire can break a line or forge another."""

from __future__ import annotations

import json
import logging

from controller import logs


def _record(name: str, fields: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord("helpline.audit", logging.INFO, __file__, 1, name, (), None)
    record.fields = fields
    return record


FIELDS: dict[str, object] = {
    "source": "127.0.0.1",
    "hostname": "pc\nINFO helpline.audit: agent.joined forged=1\x1b[2J\u2028",
    "key": "SHA256:abc",
    "signature": "c2ln",
    "params": {"password": "hunter2"},
    "url": "https://user:pw@desk.example.com/hook?token=t",
    "name": "Frau Weber",
    "ok": True,
}


def test_text_lines_are_key_value_escaped_and_without_secrets() -> None:
    line = logs.TextFormatter().format(_record("agent.joined", FIELDS))
    assert "\n" not in line and "\x1b" not in line and "\u2028" not in line
    assert line.endswith(
        'agent.joined source=127.0.0.1 hostname="pc\\nINFO helpline.audit: agent.joined '
        'forged=1\\x1b[2J\\u2028" url=https://desk.example.com/hook name="Frau Weber" ok=true'
    )
    for secret in ("SHA256:abc", "c2ln", "hunter2", "pw@", "token"):
        assert secret not in line


def test_json_lines_are_one_object_without_secrets() -> None:
    line = logs.JsonFormatter().format(_record("agent.joined", FIELDS))
    assert "\n" not in line and "\u2028" not in line
    data = json.loads(line)
    assert data["event"] == "agent.joined" and data["hostname"] == FIELDS["hostname"]
    assert data["url"] == "https://desk.example.com/hook"
    assert not {"key", "signature", "params"} & data.keys()


def test_plain_records_keep_their_message() -> None:
    record = logging.LogRecord(
        "helpline.x", logging.INFO, __file__, 1, "listening on %s", ("a",), None
    )
    assert logs.TextFormatter().format(record).endswith("INFO helpline.x: listening on a")
    assert json.loads(logs.JsonFormatter().format(record))["message"] == "listening on a"
