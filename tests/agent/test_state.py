"""The agent's state directory: private modes, the identity key, session, outbox, pid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.state import AgentHome, StateError

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@pytest.fixture
def home(tmp_path: Path) -> AgentHome:
    return AgentHome(tmp_path / "agent-home")


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _raw(key: object) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    assert isinstance(key, Ed25519PrivateKey)
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def test_constructor_does_not_touch_disk(tmp_path: Path) -> None:
    AgentHome(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_default_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HELPLINE_AGENT_HOME", str(tmp_path / "x"))
    assert AgentHome.default().path == tmp_path / "x"
    monkeypatch.delenv("HELPLINE_AGENT_HOME")
    assert "helpline-agent" in str(AgentHome.default().path)


@posix_only
def test_ensure_creates_a_private_directory(home: AgentHome) -> None:
    home.ensure()
    assert home.path.is_dir()
    assert _mode(home.path) == 0o700
    home.ensure()  # idempotent


@posix_only
def test_ensure_refuses_a_directory_others_can_read(home: AgentHome) -> None:
    home.path.mkdir()
    home.path.chmod(0o755)
    with pytest.raises(StateError) as info:
        home.ensure()
    assert f"chmod 700 {home.path}" in str(info.value)


def test_ensure_refuses_a_file_in_the_way(home: AgentHome) -> None:
    home.path.write_text("not a directory")
    with pytest.raises(StateError, match="not a directory"):
        home.ensure()


@posix_only
def test_key_is_created_0600_and_reloaded_identical(home: AgentHome) -> None:
    key = home.load_or_create_key()
    assert _mode(home.key_path) == 0o600
    assert home.key_path.read_bytes().startswith(b"ed25519:")
    again = AgentHome(home.path).load_or_create_key()
    assert _raw(again) == _raw(key)
    assert [p.name for p in home.path.iterdir()] == ["agent.key"]  # no temporary left over


@posix_only
def test_key_readable_by_others_is_refused(home: AgentHome) -> None:
    home.load_or_create_key()
    home.key_path.chmod(0o644)
    with pytest.raises(StateError) as info:
        home.load_or_create_key()
    assert "chmod 600" in str(info.value)
    assert str(home.key_path) in str(info.value)


def test_a_pem_ed25519_key_is_accepted(home: AgentHome) -> None:
    """An operator may provision the identity as a standard PKCS8 PEM file."""
    home.ensure()
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(home.key_path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, pem)
    os.close(fd)
    assert _raw(home.load_or_create_key()) == _raw(key)


def test_a_damaged_key_is_refused(home: AgentHome) -> None:
    home.ensure()
    fd = os.open(home.key_path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"ed25519:not-a-key\n")
    os.close(fd)
    with pytest.raises(StateError, match="damaged"):
        home.load_or_create_key()


def test_key_of_the_wrong_type_is_refused(home: AgentHome) -> None:
    home.ensure()
    pem = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(home.key_path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, pem)
    os.close(fd)
    with pytest.raises(StateError, match="not an Ed25519 key"):
        home.load_or_create_key()


def test_damaged_key_is_refused_not_replaced(home: AgentHome) -> None:
    home.ensure()
    fd = os.open(home.key_path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"garbage")
    os.close(fd)
    with pytest.raises(StateError, match="pair the agent again"):
        home.load_or_create_key()
    assert home.key_path.read_bytes() == b"garbage"


@posix_only
def test_symlinked_key_is_refused(home: AgentHome, tmp_path: Path) -> None:
    elsewhere = AgentHome(tmp_path / "other")
    elsewhere.load_or_create_key()
    home.ensure()
    home.key_path.symlink_to(elsewhere.key_path)
    with pytest.raises(StateError):
        home.load_or_create_key()


@posix_only
def test_session_save_load_clear(home: AgentHome) -> None:
    assert home.load_session() is None
    home.save_session({"agent_id": "a1", "resume_token": "t", "n": [1, 2]})
    assert _mode(home.session_path) == 0o600
    assert AgentHome(home.path).load_session() == {
        "agent_id": "a1",
        "resume_token": "t",
        "n": [1, 2],
    }
    home.save_session({"agent_id": "a2"})
    assert home.load_session() == {"agent_id": "a2"}
    home.clear_session()
    assert home.load_session() is None
    home.clear_session()  # clearing twice is fine


def test_damaged_session_is_a_clear_error(home: AgentHome) -> None:
    home.save_session({"a": 1})
    home.session_path.write_text("{not json")
    with pytest.raises(StateError, match="pair the agent again"):
        home.load_session()


def test_unserialisable_session_leaves_the_old_one(home: AgentHome) -> None:
    home.save_session({"a": 1})
    with pytest.raises(TypeError):
        home.save_session({"a": object()})
    assert home.load_session() == {"a": 1}


def test_outbox_survives_a_new_instance_oldest_first(home: AgentHome) -> None:
    home.outbox_put("req-2", '{"n":2}')
    home.outbox_put("req-1", '{"n":1}')
    home.outbox_put("req_3", '{"n":3}')
    # Pin mtimes so the order is by age, not by name, whatever the clock resolution.
    for offset, name in enumerate(["req-2", "req-1", "req_3"]):
        os.utime(home.outbox_path / f"{name}.json", ns=(10**18 + offset, 10**18 + offset))
    fresh = AgentHome(home.path)
    assert fresh.outbox_pending() == [
        ("req-2", '{"n":2}'),
        ("req-1", '{"n":1}'),
        ("req_3", '{"n":3}'),
    ]
    fresh.outbox_remove("req-1")
    fresh.outbox_remove("req-1")  # missing is fine
    assert [rid for rid, _ in AgentHome(home.path).outbox_pending()] == ["req-2", "req_3"]


def test_outbox_ties_in_mtime_break_by_name(home: AgentHome) -> None:
    for name in ("b", "a", "c"):
        home.outbox_put(name, name)
        os.utime(home.outbox_path / f"{name}.json", ns=(10**18, 10**18))
    assert [rid for rid, _ in home.outbox_pending()] == ["a", "b", "c"]


def test_outbox_put_replaces_and_ignores_stray_files(home: AgentHome) -> None:
    assert home.outbox_pending() == []
    home.outbox_put("r1", "old")
    home.outbox_put("r1", "new")
    (home.outbox_path / ".r2.json.abc.tmp").write_text("half")
    (home.outbox_path / "notes.txt").write_text("x")
    assert home.outbox_pending() == [("r1", "new")]


@pytest.mark.parametrize(
    "bad",
    ["", "../escape", "a/b", "..", ".hidden", "x" * 65, "a.json", "a\n", "é", "a b", "\\x"],
)
def test_bad_request_ids_are_refused(home: AgentHome, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid request id"):
        home.outbox_put(bad, "{}")
    with pytest.raises(ValueError, match="invalid request id"):
        home.outbox_remove(bad)
    assert not home.path.exists()


def test_pid_file_round_trip(home: AgentHome) -> None:
    assert home.read_pid() is None
    home.write_pid()
    assert AgentHome(home.path).read_pid() == os.getpid()
    home.clear_pid()
    assert home.read_pid() is None
    assert not home.pid_path.exists()


def test_stale_or_garbage_pid_reads_as_none_and_is_cleared(home: AgentHome) -> None:
    home.ensure()
    home.pid_path.write_text("2147483000\n")  # no such process
    assert home.read_pid() is None
    home.clear_pid()
    assert not home.pid_path.exists()
    home.pid_path.write_text("not a pid")
    assert home.read_pid() is None


def test_clear_pid_leaves_another_running_agent_alone(home: AgentHome) -> None:
    home.ensure()
    other = os.getppid()  # a live process that is not us
    home.pid_path.write_text(f"{other}\n")
    home.clear_pid()
    assert home.read_pid() == other


def test_one_agent_per_state_directory(tmp_path: Path) -> None:
    first, second = AgentHome(tmp_path / "state"), AgentHome(tmp_path / "state")
    assert first.lock() is True
    assert first.lock() is True  # taking it again in the same agent is a no-op
    assert second.lock() is False  # flock: a second open of the file is refused
    assert ((tmp_path / "state" / "agent.lock").stat().st_mode & 0o777) == 0o600
