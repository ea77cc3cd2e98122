"""The audit log as an admin and an outsider meet it: CLI verify, export, roles, revocation."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from controller.client import ClientError, ClientSettings, Connection
from tests.e2e.conftest import Controller, ssh_keygen, wait_until


def _keygen(path: Path) -> Path:
    return ssh_keygen(path)


def _as_user(controller: Controller, tmp_path: Path, name: str, *role: str) -> dict[str, str]:
    """Enrol ``name`` and return an environment whose CLI logs in as them."""
    key = _keygen(tmp_path / name)
    controller.json("user", "add", name, "--key", f"{key}.pub", *role)
    pin = controller.json("agent-config", "--out", str(tmp_path / "a.toml"))["pin"]
    env = {k: v for k, v in controller.env.items() if k != "HELPLINE_HOME"}
    env["HELPLINE_CLIENT_CONFIG"] = str(tmp_path / f"{name}.toml")
    controller.cli("login", "--url", controller.url, "--pin", pin, "--key", str(key), env=env)
    return env


def test_verify_export_and_verify_the_export_elsewhere(
    controller: Controller, tmp_path: Path
) -> None:
    ticket = controller.open_ticket()
    agent = controller.start_agent(controller.issue_code(ticket))
    controller.connected_session(ticket)
    controller.json("diag", ticket)
    agent.process.terminate()
    assert agent.wait() == 0

    verified = controller.json("audit", "verify")
    assert verified["ok"] is True
    assert verified["events"] >= 10

    log = controller.json("audit", "log", "--ticket", ticket)
    assert {"code.issued", "consent.given", "diag.requested", "agent.left"} <= {
        e["type"] for e in log
    }
    assert all(e["ticket"] == ticket for e in log)
    assert controller.json("audit", "log", "--actor", "admin", "--since", "1h")
    assert controller.json(
        "audit", "log", "--type", "diag.requested", "--session", log[-1]["session"]
    )

    export = tmp_path / "audit.jsonl"
    exported = controller.json("audit", "export", "--out", str(export))
    assert exported["events"] == exported["head_seq"] >= verified["events"]
    pubkey = tmp_path / "audit.pub"
    pubkey.write_text(controller.json("audit", "pubkey")["public_key"])
    # an outsider: no controller, no database, only the file and the public key
    outsider = {k: v for k, v in controller.env.items() if k != "HELPLINE_HOME"}
    ok = controller.cli(
        "audit", "verify", "--file", str(export), "--pubkey", str(pubkey), "--json", env=outsider
    )
    assert '"ok": true' in ok.stdout

    data = bytearray(export.read_bytes())
    position = data.index(b"consent.given") + 3
    data[position] ^= 0x01  # one byte, one bit
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(bytes(data))
    bad = controller.cli(
        "audit", "verify", "--file", str(edited), "--pubkey", str(pubkey), check=False, env=outsider
    )
    assert bad.returncode == 9
    assert "TAMPERED" in bad.stdout


def test_tampered_database_fails_verification(controller: Controller) -> None:
    ticket = controller.open_ticket()
    controller.issue_code(ticket)
    controller.stop()
    database = sqlite3.connect(controller.home / "helpline.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        database.execute("DELETE FROM audit_events WHERE type = 'code.issued'")
    # an attacker with the file drops the guard and edits quietly
    database.execute("DROP TRIGGER audit_events_no_update")
    database.execute("UPDATE audit_events SET actor = 'nobody' WHERE type = 'code.issued'")
    database.commit()
    database.close()
    controller.start()
    result = controller.cli("audit", "verify", "--json", check=False)
    assert result.returncode == 9
    assert "modified" in result.stdout


def test_auditor_reads_but_changes_nothing(controller: Controller, tmp_path: Path) -> None:
    env = _as_user(controller, tmp_path, "olga", "--role", "auditor")
    assert controller.cli("audit", "log", "--json", env=env).returncode == 0
    assert controller.cli("ticket", "list", "--json", env=env).returncode == 0
    refused = controller.cli(
        "ticket", "open", "--title", "x", "--customer", "y", check=False, env=env
    )
    assert refused.returncode == 4
    forbidden = controller.json("audit", "log", "--type", "api.forbidden")
    assert forbidden[-1]["actor"] == "olga"
    assert forbidden[-1]["details"]["method"] == "ticket.open"


def test_removing_a_user_closes_their_open_connection(
    controller: Controller, tmp_path: Path
) -> None:
    key = _keygen(tmp_path / "tess")
    controller.json("user", "add", "tess", "--key", f"{key}.pub", "--level", "L1")
    settings = ClientSettings(
        url=controller.url,
        pin=controller.json("agent-config", "--out", str(tmp_path / "a.toml"))["pin"],
        key=str(key),
    )

    async def scenario() -> str:
        async with Connection(settings) as connection:
            assert (await connection.call("whoami"))["name"] == "tess"
            removed = await asyncio.to_thread(controller.json, "user", "remove", "tess")
            assert removed["connections_closed"] == 1
            try:
                await connection.call("ticket.list")
            except ClientError as exc:
                return exc.code
            return "still connected"

    assert asyncio.run(scenario()) == "unreachable"
    # and the key no longer logs in
    env = {k: v for k, v in controller.env.items() if k != "HELPLINE_HOME"}
    env["HELPLINE_CLIENT_CONFIG"] = str(tmp_path / "tess.toml")
    again = controller.cli(
        "login",
        "--url",
        controller.url,
        "--pin",
        settings.pin,
        "--key",
        str(key),
        check=False,
        env=env,
    )
    assert again.returncode == 4
    types = [e["type"] for e in controller.json("audit", "log")]
    assert "user.removed" in types


def test_set_role_takes_effect(controller: Controller, tmp_path: Path) -> None:
    env = _as_user(controller, tmp_path, "ivan", "--level", "L1")
    changed = controller.json("user", "set-role", "ivan", "--role", "technician", "--level", "L3")
    assert changed["level"] == "L3"
    assert (
        controller.cli("user", "set-role", "ivan", "--role", "wizard", check=False).returncode == 2
    )
    assert (
        controller.cli("user", "set-role", "nobody", "--role", "auditor", check=False).returncode
        == 3
    )
    listed = {u["name"]: u for u in controller.json("user", "list")}
    assert listed["ivan"]["level"] == "L3"
    audit = controller.json("audit", "log", "--type", "user.role_changed")
    assert audit[-1]["details"]["to"] == ["technician", "L3"]
    assert controller.cli("ticket", "list", env=env).returncode == 0


def _launder(database_path: Path) -> None:
    """What the attack did: drop the guards, edit an early event, recompute every later
    hash, delete the signed checkpoints. Every link is consistent afterwards."""
    from controller import auditchain

    database = sqlite3.connect(database_path)
    for table in ("audit_events", "audit_checkpoints"):
        for action in ("update", "delete"):
            database.execute(f"DROP TRIGGER {table}_no_{action}")
    rows = database.execute("SELECT seq, record FROM audit_events ORDER BY seq").fetchall()
    prev = auditchain.GENESIS
    for seq, record in rows:
        if seq == 1:
            data = json.loads(record)
            data["details"]["user"] = "mallory"
            record = auditchain.canonical(data)
            database.execute(
                "UPDATE audit_events SET details = ? WHERE seq = 1",
                (json.dumps(data["details"]),),
            )
        digest = auditchain.link_hash(prev, record)
        database.execute(
            "UPDATE audit_events SET record = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (record, prev, digest, seq),
        )
        prev = digest
    database.execute("DELETE FROM audit_checkpoints")
    database.commit()
    database.close()


def test_a_laundered_database_is_never_signed_and_an_admin_accepts_it(
    controller: Controller,
) -> None:
    ticket = controller.open_ticket()
    controller.issue_code(ticket)
    controller.stop()
    head_before = (controller.home / "audit-head.json").read_text()
    _launder(controller.home / "helpline.db")

    controller.start()
    # serve says at once what is wrong, and keeps serving
    wait_until(lambda: "AUDIT LOG TAMPERED" in controller.log(), 10, "the tamper warning")
    assert "differs from the head this controller signed" in controller.log()
    result = controller.cli("audit", "verify", check=False)
    assert result.returncode == 9
    assert "TAMPERED" in result.stdout and "signing stopped" in result.stdout
    controller.issue_code(controller.open_ticket())  # the controller still works

    controller.stop()  # no final checkpoint over a laundered chain
    controller.start()
    again = controller.cli("audit", "verify", "--json", check=False)
    assert again.returncode == 9
    assert json.loads(again.stdout)["signing"]["signing"] == "stopped"
    head = json.loads((controller.home / "audit-head.json").read_text())
    assert head["seq"] == json.loads(head_before)["seq"]  # never moved, never backwards

    accepted = controller.json("audit", "accept", "--reason", "restored from Monday's backup")
    assert accepted["signed_seq"] >= accepted["accepted_seq"]
    verified = controller.json("audit", "verify")
    assert verified["ok"] is True
    assert verified["signing"]["signing"] == "ok"
    record = controller.json("audit", "log", "--type", "audit.accepted")[-1]
    assert record["actor"] == "admin"
    assert record["details"]["reason"] == "restored from Monday's backup"
    assert "differs from the head" in record["details"]["problem"]
    nothing = controller.cli("audit", "accept", "--reason", "again", check=False)
    assert nothing.returncode == 8
