"""The agent's fix runner against real signed bundles and real processes (no network)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import fixes
from controller.catalogue import builtin_dir, load_dir
from protocol import catalogue
from protocol.calls.fixes import FixReport
from protocol.catalogue import Fix
from protocol.messages import FixProposal, Technician, TicketRef

KEY = Ed25519PrivateKey.generate()
PINNED = catalogue.key_text(KEY.public_key())


def make_fix(**fields: Any) -> Fix:
    base: dict[str, Any] = {
        "id": "test.fix",
        "title": "Test",
        "description": "A fix made by the tests.",
        "command": ["{python}", "-c", "print('hello')"],
        "timeout": 10,
    }
    base.update(fields)
    return Fix.model_validate(base)


ECHO = make_fix(
    id="test.echo",
    command=["{python}", "-c", "import sys; print(sys.argv[1])", "{message}"],
    params={"message": {"type": "string", "pattern": r"[ -~]{1,80}"}},
)
HANG = make_fix(
    id="test.hang", command=["{python}", "-c", "import time; time.sleep(600)"], timeout=1
)
FLOOD = make_fix(
    id="test.flood", command=["{python}", "-c", "import sys\nfor i in range(200000): print('x'*80)"]
)
FORKER = make_fix(
    id="test.forker",
    command=[
        "{python}",
        "-c",
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(child.pid, flush=True)\ntime.sleep(600)",
    ],
    timeout=1,
)


def bundle(*extra: Fix, serial: int = 10, key: Ed25519PrivateKey = KEY) -> dict[str, str]:
    fixes_ = [*load_dir(builtin_dir()), ECHO, HANG, FLOOD, FORKER, *extra]
    signed = catalogue.sign_bundle(key, fixes_, serial=serial, signed_at=datetime.now(UTC))
    return signed.model_dump()


def proposal(
    fix_id: str,
    params: dict[str, str] | None = None,
    *,
    level: str = "L3",
    signed: dict[str, str] | None = None,
) -> FixProposal:
    return FixProposal(
        bundle=signed or bundle(),
        fix_id=fix_id,
        params=params or {},
        technician=Technician(name="tina", role="technician", level=level),
        ticket=TicketRef(id="T-1", title="Slow", customer="ACME"),
    )


class Recorder:
    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.asked: list[fixes.FixQuestion] = []
        self.output: list[tuple[str, str]] = []

    async def ask(self, question: fixes.FixQuestion) -> bool:
        self.asked.append(question)
        return self.answer

    async def emit(self, stream: str, data: str) -> None:
        self.output.append((stream, data))


def policy(tmp_path: Path, recorder: Recorder, **fields: Any) -> fixes.FixPolicy:
    return fixes.FixPolicy(
        pinned_key=PINNED, ask=recorder.ask, serial_file=tmp_path / "serial", **fields
    )


def run(prop: FixProposal, pol: fixes.FixPolicy, rec: Recorder) -> FixReport:
    return asyncio.run(fixes.run(prop, pol, rec.emit))


def refused(prop: FixProposal, pol: fixes.FixPolicy, rec: Recorder) -> str:
    with pytest.raises(fixes.Refused) as info:
        run(prop, pol, rec)
    assert rec.output == [] or rec.output[0][0] == "status"
    return info.value.code


def test_an_approved_fix_runs_with_argv_only(tmp_path: Path) -> None:
    rec = Recorder()
    result = run(
        proposal("test.echo", {"message": "hi; rm -rf / $(id) `id` | cat"}),
        policy(tmp_path, rec),
        rec,
    )
    assert result.status == "succeeded"
    # the metacharacters came out literally: no shell ever saw them
    assert result.stdout == "hi; rm -rf / $(id) `id` | cat\n"
    assert result.consent == "customer"
    assert len(rec.asked) == 1 and rec.asked[0].values == {
        "message": "hi; rm -rf / $(id) `id` | cat"
    }


def test_the_environment_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELPLINE_SECRET", "leak")
    show = make_fix(
        id="test.env", command=["{python}", "-c", "import os; print(sorted(os.environ))"]
    )
    rec = Recorder()
    result = run(proposal("test.env", signed=bundle(show)), policy(tmp_path, rec), rec)
    assert "HELPLINE_SECRET" not in result.stdout
    assert "'PATH'" in result.stdout


def test_a_tampered_bundle_is_refused(tmp_path: Path) -> None:
    signed = bundle()
    signed["payload"] = signed["payload"].replace("print(sys.argv[1])", "print('owned')")
    rec = Recorder()
    assert (
        refused(proposal("test.echo", {"message": "x"}, signed=signed), policy(tmp_path, rec), rec)
        == "bundle_signature"
    )
    assert rec.asked == []


def test_a_bundle_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    rec = Recorder()
    other = bundle(key=Ed25519PrivateKey.generate())
    assert (
        refused(proposal("test.echo", {"message": "x"}, signed=other), policy(tmp_path, rec), rec)
        == "bundle_signature"
    )


def test_a_fix_not_in_the_bundle_is_refused(tmp_path: Path) -> None:
    rec = Recorder()
    assert refused(proposal("format.disk"), policy(tmp_path, rec), rec) == "unknown_fix"


def test_an_agent_without_a_catalogue_key_runs_nothing(tmp_path: Path) -> None:
    rec = Recorder()
    pol = fixes.FixPolicy(pinned_key=None, ask=rec.ask)
    assert refused(proposal("test.echo", {"message": "x"}), pol, rec) == "no_fix_key"


def test_an_older_bundle_is_refused_after_a_newer_one(tmp_path: Path) -> None:
    rec = Recorder()
    pol = policy(tmp_path, rec)
    run(proposal("test.echo", {"message": "x"}, signed=bundle(serial=20)), pol, rec)
    assert (
        refused(proposal("test.echo", {"message": "x"}, signed=bundle(serial=19)), pol, rec)
        == "bundle_rollback"
    )


@pytest.mark.parametrize(
    ("fix_id", "params"),
    [
        ("disk.free_space", {"root": "/tmp", "days": "99999"}),
        ("disk.free_space", {"root": "/tmp", "days": "seven"}),
        ("disk.free_space", {"root": "/tmp", "days": "7", "extra": "1"}),
        ("disk.vacuum_journal", {"size": "200M; reboot"}),
        ("cpu.stop_runaway", {"pid": "1", "signal": "STOP"}),
        ("service.restart", {"service": "evil.service"}),
    ],
    ids=["out-of-range", "not-a-number", "unknown-param", "pattern", "enum", "enum-service"],
)
def test_parameters_out_of_schema_are_refused(
    tmp_path: Path, fix_id: str, params: dict[str, str]
) -> None:
    rec = Recorder()
    assert refused(proposal(fix_id, params), policy(tmp_path, rec), rec) == "bad_param"
    assert rec.asked == []


def test_a_path_escaping_its_root_is_refused(tmp_path: Path) -> None:
    rec = Recorder()
    for escape in ("/tmp/../etc", "/etc"):
        assert (
            refused(
                proposal("disk.free_space", {"root": escape, "days": "1"}),
                policy(tmp_path, rec),
                rec,
            )
            == "bad_param"
        )
    # a symlink inside an allowed root that points outside it
    link = tmp_path / "sneaky"
    link.symlink_to("/etc")
    assert str(link).startswith("/tmp/")
    assert (
        refused(
            proposal("disk.free_space", {"root": str(link), "days": "1"}),
            policy(tmp_path, rec),
            rec,
        )
        == "bad_param"
    )


def test_a_technician_below_the_fix_level_is_refused(tmp_path: Path) -> None:
    rec = Recorder()
    assert (
        refused(
            proposal("cpu.stop_runaway", {"pid": str(os.getpid())}, level="L1"),
            policy(tmp_path, rec),
            rec,
        )
        == "level"
    )


def test_the_customer_saying_no_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    touch = make_fix(
        id="test.touch", command=["{python}", "-c", f"open({str(marker)!r}, 'w').close()"]
    )
    rec = Recorder(answer=False)
    assert (
        refused(proposal("test.touch", signed=bundle(touch)), policy(tmp_path, rec), rec)
        == "declined"
    )
    assert len(rec.asked) == 1
    assert not marker.exists()


def test_preapproved_and_unattended_fixes_do_not_ask(tmp_path: Path) -> None:
    rec = Recorder(answer=False)
    pre = run(
        proposal("test.echo", {"message": "a"}),
        policy(tmp_path, rec, preapproved=frozenset({"test.echo"})),
        rec,
    )
    unattended = run(
        proposal("test.echo", {"message": "b"}),
        policy(tmp_path, rec, unattended=frozenset({"test.echo"})),
        rec,
    )
    assert (pre.consent, unattended.consent) == ("preapproved", "unattended")
    assert rec.asked == []


def test_a_fix_that_hangs_is_killed_with_its_whole_group(tmp_path: Path) -> None:
    rec = Recorder()
    result = run(proposal("test.forker"), policy(tmp_path, rec), rec)
    assert result.status == "timed_out"
    assert result.timed_out is True
    child = int(result.stdout.split()[0])
    # the grandchild in the same process group is gone too
    assert not _alive(child)
    result = run(proposal("test.hang"), policy(tmp_path, rec), rec)
    assert result.status == "timed_out"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_a_fix_that_floods_output_is_capped_with_a_mark(tmp_path: Path) -> None:
    rec = Recorder()
    result = run(proposal("test.flood"), policy(tmp_path, rec), rec)
    assert result.status == "succeeded"  # it finished: we kept draining its pipe
    assert result.truncated.stdout is True
    assert result.stdout.endswith(f"[… truncated after {fixes.OUTPUT_CAP} bytes …]")
    streamed = "".join(data for stream, data in rec.output if stream == "stdout")
    assert len(streamed.encode()) < fixes.OUTPUT_CAP + 200
    assert "truncated" in streamed


# -- the built-in catalogue, each fix for real where this machine allows ---------------


def test_builtin_catalogue_has_real_fixes() -> None:
    fixes_ = load_dir(builtin_dir())
    assert len(fixes_) >= 10
    assert all(fix.description and fix.title for fix in fixes_)


def test_disk_free_space_removes_only_old_files(tmp_path: Path) -> None:
    root = tmp_path / "junk"
    (root / "sub").mkdir(parents=True)
    old, new = root / "sub" / "old.log", root / "new.log"
    old.write_text("x" * 1000)
    new.write_text("y")
    month_ago = datetime.now(UTC).timestamp() - 30 * 86400
    os.utime(old, (month_ago, month_ago))
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    os.utime(outside, (month_ago, month_ago))
    (root / "link").symlink_to(outside)
    rec = Recorder()
    result = run(
        proposal("disk.free_space", {"root": str(root), "days": "7"}), policy(tmp_path, rec), rec
    )
    assert result.status == "succeeded", result
    assert not old.exists() and new.exists()
    assert outside.exists()  # the link went, never what it pointed to


def test_disk_rotate_log_compresses_and_truncates(tmp_path: Path) -> None:
    import gzip

    folder = Path("/var/log") / f"helpline-test-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        log = folder / "app.log"
        log.write_text("line\n" * 1000)
        (folder / "app.log.1.gz").write_bytes(gzip.compress(b"older"))
        rec = Recorder()
        result = run(
            proposal("disk.rotate_log", {"path": str(log), "keep": "2"}), policy(tmp_path, rec), rec
        )
        assert result.status == "succeeded", result
        assert log.stat().st_size == 0
        assert gzip.decompress((folder / "app.log.1.gz").read_bytes()) == b"line\n" * 1000
        assert gzip.decompress((folder / "app.log.2.gz").read_bytes()) == b"older"
    finally:
        for item in folder.iterdir():
            item.unlink()
        folder.rmdir()


def test_cpu_stop_runaway_stops_that_process_only(tmp_path: Path) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        rec = Recorder()
        result = run(
            proposal("cpu.stop_runaway", {"pid": str(victim.pid), "signal": "TERM"}),
            policy(tmp_path, rec),
            rec,
        )
        assert result.status == "succeeded"
        assert victim.wait(10) == -15
        assert "time.sleep(600)" in rec.asked[0].notes["pid"]  # shown before asking
    finally:
        if victim.poll() is None:
            victim.kill()


@pytest.mark.skipif(os.geteuid() != 0, reason="apt-get clean needs root")
def test_disk_clean_package_cache_empties_the_apt_archive(tmp_path: Path) -> None:
    archive = Path("/var/cache/apt/archives")
    if not archive.is_dir():
        pytest.skip("no apt archive on this machine")
    dummy = archive / f"helpline-test-{os.getpid()}_1.0_all.deb"
    dummy.write_bytes(b"!<arch>\n")
    rec = Recorder()
    result = run(proposal("disk.clean_package_cache"), policy(tmp_path, rec), rec)
    assert result.status == "succeeded", result
    assert not dummy.exists()


@pytest.mark.parametrize(
    ("fix_id", "params", "argv"),
    [
        ("service.restart", {"service": "cups.service"}, "systemctl restart cups.service"),
        ("service.reset_failed", {}, "systemctl reset-failed"),
        ("network.renew_dhcp", {}, "systemctl restart NetworkManager.service"),
        ("network.reset_dns", {}, "resolvectl flush-caches"),
        ("time.enable_ntp", {}, "timedatectl set-ntp true"),
        ("disk.vacuum_journal", {"size": "150M"}, "journalctl --vacuum-size 150M"),
        ("printing.clear_queue", {}, "cancel -a -x"),
    ],
)
def test_system_tool_fixes_call_exactly_their_argv(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fix_id: str,
    params: dict[str, str],
    argv: str,
) -> None:
    """This machine has no running systemd or CUPS: stand-in tools record their argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv"
    tool = argv.split()[0]
    (bin_dir / tool).write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"open({str(record)!r}, 'w').write(' '.join(sys.argv[1:]))\nprint('done')\n"
    )
    (bin_dir / tool).chmod(0o755)
    monkeypatch.setitem(fixes.CLEAN_ENV, "PATH", str(bin_dir))
    rec = Recorder()
    result = run(proposal(fix_id, params), policy(tmp_path, rec), rec)
    assert result.status == "succeeded", result
    assert record.read_text() == " ".join(argv.split()[1:])


def test_memory_relieve_drops_caches_or_says_why_not(tmp_path: Path) -> None:
    rec = Recorder()
    result = run(proposal("memory.relieve"), policy(tmp_path, rec), rec)
    if os.access("/proc/sys/vm/drop_caches", os.W_OK):
        assert result.status == "succeeded", result
        assert "caches dropped" in result.stdout
    else:  # a container's read-only /proc: the fix fails and says so, nothing crashes
        assert result.status == "failed"
        assert "cannot drop caches" in result.stderr


LEAVER = make_fix(
    id="test.leaver",
    command=[
        "{python}",
        "-c",
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(child.pid, flush=True)",
    ],
)


def test_children_left_behind_are_killed_with_the_group(tmp_path: Path) -> None:
    rec = Recorder()
    result = run(proposal("test.leaver", signed=bundle(LEAVER)), policy(tmp_path, rec), rec)
    assert result.status == "succeeded"
    assert not _alive(int(result.stdout.split()[0]))


def test_ending_the_session_kills_a_running_fix(tmp_path: Path) -> None:
    rec = Recorder()
    pol = policy(tmp_path, rec)

    async def scenario() -> int:
        printed = asyncio.Event()
        pids: list[int] = []

        async def emit(stream: str, data: str) -> None:
            if stream == "stdout":
                pids.append(int(data.split()[0]))
                printed.set()

        task = asyncio.create_task(fixes.run(proposal("test.forker"), pol, emit))
        await asyncio.wait_for(printed.wait(), 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return pids[0]

    child = asyncio.run(scenario())
    assert not _alive(child)
