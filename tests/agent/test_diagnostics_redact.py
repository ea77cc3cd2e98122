"""Secrets are masked on the agent, before a snapshot leaves the machine."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from agent.collectors.logs import parse_journal
from agent.collectors.processes import _cmdline
from agent.collectors.redact import redact, redact_argv, redact_tree
from tests.conftest import scaled

PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "masked", "secret"),
    [
        ("mysql --password=hunter2 -u root", "mysql --password=*** -u root", "hunter2"),
        ("app --token abcd1234 --verbose", "app --token *** --verbose", "abcd1234"),
        ("db --db-password 's3 cr3t'", "db --db-password ***", "s3"),
        ("GET /cb?code=1&access_token=XyZ&x=1", "GET /cb?code=1&access_token=***&x=1", "XyZ"),
        ("MYSQL_PWD=xyz mysql", "MYSQL_PWD=*** mysql", "xyz"),
        ('{"api_key": "AbC123"}', '{"api_key": ***}', "AbC123"),
        ("client_secret: Zq9", "client_secret: ***", "Zq9"),
        ('curl -H "Authorization: Bearer eyJh.b.c"', 'curl -H "Authorization: Bearer ***"', "eyJh"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***", "dXNlcjpwYXNz"),
        ("proxy-authorization=Negotiate YIIabc", "proxy-authorization=Negotiate ***", "YIIabc"),
        ("sent bearer abcdef123456 upstream", "sent bearer *** upstream", "abcdef123456"),
        ("postgres://bob:s3cret@db/x", "postgres://bob:***@db/x", "s3cret"),
        ("key AKIAIOSFODNN7EXAMPLE in env", "key *** in env", "AKIAIOSFODNN7EXAMPLE"),
        ("t=ghp_abcdefghijklmnopqrstuvwxyz0123", "t=***", "ghp_"),
        ("x xoxb-1234567890-abcdef y", "x *** y", "xoxb-"),
        (
            f"key: {PEM} tail",
            "key: -----BEGIN PRIVATE KEY----- *** -----END PRIVATE KEY----- tail",
            "b3BlbnNz",
        ),
        # clipped in the middle of the key: everything after BEGIN goes
        (PEM[:60], "-----BEGIN PRIVATE KEY----- *** -----END PRIVATE KEY-----", "b3Blb"),
    ],
)
def test_secrets_are_masked_and_names_kept(text: str, masked: str, secret: str) -> None:
    assert redact(text) == masked
    assert secret not in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "Failed password for root from 203.0.113.5 port 22 ssh2",
        "sudo: root : TTY=pts/0 ; PWD=/root ; USER=root ; COMMAND=/bin/ls",
        "/usr/bin/python3 -m http.server 8080",
        "systemd[1]: Started Session 4 of User alice.",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_redaction_is_idempotent() -> None:
    once = redact("a password=x token: y Authorization: Bearer zzzzzzzz")
    assert redact(once) == once


def test_redact_tree_reaches_every_string() -> None:
    tree = {"a": ["token=abc", {"b": "password=def"}], "n": 3, "password=ghi": None}
    flat = json.dumps(redact_tree(tree))
    for secret in ("abc", "def", "ghi"):
        assert secret not in flat
    assert '"n": 3' in flat


def test_journal_lines_are_redacted_before_they_are_clipped() -> None:
    lines = [
        {
            "__REALTIME_TIMESTAMP": "1764000000000000",
            "_SYSTEMD_UNIT": "backup.service",
            "PRIORITY": "3",
            "MESSAGE": "upload failed: POST https://u:hunter2@s3.example/x "
            "Authorization: Bearer " + "T" * 40,
        },
        # journald sends non-UTF-8 messages as byte arrays
        {"PRIORITY": "2", "SYSLOG_IDENTIFIER": "kernel", "MESSAGE": list(b"token=abc123 \xff")},
        {"MESSAGE": "x" * 5000 + " password=tail-secret"},
        "not an object",
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n"
    parsed = parse_journal(text)
    assert parsed["count"] == 3
    first, second, third = parsed["lines"]
    assert first["source"] == "backup.service"
    assert first["priority"] == "err"
    assert first["at"] == "2025-11-24T16:00:00+00:00"
    assert "hunter2" not in first["message"] and "TTTT" not in first["message"]
    assert second["source"] == "kernel" and second["priority"] == "crit"
    assert "abc123" not in second["message"] and "token=***" in second["message"]
    assert len(third["message"]) == 300
    assert parsed["by_source"] == {"backup.service": 1, "kernel": 1, "?": 1}


def test_a_real_command_line_is_read_redacted() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; sys.stdin.read()",
            "--password",
            "hunter2 with spaces",
            "api_key=k3y inline",
            "--url=https://bob:pw-in-url@example.com/",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        process = psutil.Process(child.pid)
        # right after fork the child may not have exec'd yet: wait (bounded) for its argv
        deadline = time.monotonic() + scaled(10)
        while "--password" not in process.cmdline() and time.monotonic() < deadline:
            time.sleep(0.01)
        line = _cmdline(process, psutil)
    finally:
        child.kill()
        child.wait(scaled(10))
    assert line is not None
    assert "--password *** api_key=*** --url=https://bob:***@example.com/" in line
    for secret in ("hunter2", "spaces", "k3y", "inline", "pw-in-url"):
        assert secret not in line


def test_argument_boundaries_decide_what_the_secret_is() -> None:
    argv = ["tool", "--secret", "two words", "token=a b c", "Authorization: Bearer abcdefgh1234"]
    assert redact_argv(argv) == "tool --secret *** token=*** Authorization: Bearer ***"
    assert redact_argv(["ls", "-la", "/tmp"]) == "ls -la /tmp"
    assert redact_argv(["app", "--password"]) == "app --password"  # nothing follows
