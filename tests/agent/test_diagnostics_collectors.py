"""Collector details: the parsers of OS tools' output (recorded output), sysfs batteries,
the package check that carries on in the background, and bounded commands."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.collectors import _common, clock, network, packages, power, services
from agent.collectors._common import CollectorError, Context, pressure, run

SYSTEMCTL_FAILED = """\
● cups.service        loaded failed failed CUPS Scheduler
  backup.timer        loaded failed failed Nightly backup of /home
bad
"""

APT_UPGRADABLE = """\
Listing...
curl/oldstable-security 7.88.1-10+deb12u14 amd64 [upgradable from: 7.88.1-10+deb12u12]
tzdata/oldstable-updates 2025b-0+deb12u2 all [upgradable from: 2025b-0+deb12u1]
vim/oldstable 2:9.0.1378-2+deb12u2 amd64 [upgradable from: 2:9.0.1378-2+deb12u1]
"""

DNF_CHECK_UPDATE = """\

openssl.x86_64                 1:3.0.7-27.el9          baseos
kernel.x86_64                  5.14.0-503.el9          baseos
Obsoleting Packages
grub2-tools.x86_64             1:2.06-80.el9           baseos
"""

CHRONY = (
    "A29FC87B,ntp1.example.net,3,1764000000.123,-0.000123456,0.0001,0.0002,-1.2,0.01,0.1,"
    "0.02,0.003,64.0,Normal\n"
)


def test_failed_units_are_parsed() -> None:
    units = services.parse_failed_units(SYSTEMCTL_FAILED)
    assert [u["unit"] for u in units] == ["cups.service", "backup.timer"]
    assert units[1]["description"] == "Nightly backup of /home"
    assert units[0]["active"] == units[0]["sub"] == "failed"


def test_services_without_systemd_are_not_available_not_an_error() -> None:
    if _common.systemd_running():
        pytest.skip("systemd runs here; the unavailable path is for machines without it")
    section = services.collect(Context())
    assert section["available"] is False and section["failed_count"] == 0


def test_apt_upgradable_is_parsed_with_security_updates() -> None:
    parsed = packages.parse_apt(APT_UPGRADABLE)
    assert parsed["pending"] == 3
    assert parsed["security"] == 1
    assert parsed["security_names"] == ["curl"]
    assert parsed["names"] == ["curl", "tzdata", "vim"]


def test_dnf_check_update_is_parsed() -> None:
    parsed = packages.parse_dnf(DNF_CHECK_UPDATE)
    assert parsed["names"] == ["openssl", "kernel", "grub2-tools"]
    assert parsed["security"] is None  # dnf check-update does not say


def test_chrony_tracking_is_parsed() -> None:
    parsed = clock.parse_chrony(CHRONY)
    assert parsed["offset_ms"] == -0.123
    assert parsed["stratum"] == 3
    assert parsed["synchronized"] is True
    with pytest.raises(CollectorError):
        clock.parse_chrony("garbage")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex is Linux")
def test_the_kernel_clock_state_is_read() -> None:
    state = clock.kernel_clock()
    assert state["synchronized"] in (True, False)
    assert state["max_error_ms"] >= 0


def test_battery_wear_is_read_from_sysfs(tmp_path: Path) -> None:
    bat = tmp_path / "BAT0"
    bat.mkdir()
    for name, value in {
        "type": "Battery",
        "status": "Discharging",
        "energy_full": "25340000",
        "energy_full_design": "57000000",
        "cycle_count": "1187",
        "model_name": "5B10W13930",
    }.items():
        (bat / name).write_text(value + "\n")
    ac = tmp_path / "AC"
    ac.mkdir()
    (ac / "type").write_text("Mains\n")
    (packs,) = [power.linux_batteries(str(tmp_path))]
    assert packs == [
        {
            "name": "BAT0",
            "status": "Discharging",
            "health_percent": 44.5,
            "cycle_count": 1187,
            "model": "5B10W13930",
        }
    ]


def test_resolv_conf_is_parsed() -> None:
    servers, search = network._parse_resolv(
        "# comment\nnameserver 10.0.0.53\nnameserver fd00::53 # v6\nsearch corp.example lan\n"
    )
    assert servers == ["10.0.0.53", "fd00::53"]
    assert search == ["corp.example", "lan"]


def test_the_name_to_look_up_comes_from_env_then_the_controller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HELPLINE_DIAG_RESOLVE", raising=False)
    assert network.resolve_name(Context()) == network.DEFAULT_RESOLVE
    assert network.resolve_name(Context(controller_url="wss://127.0.0.1:8443")) == "example.com"
    url = "wss://support.acme.example:8443"
    assert network.resolve_name(Context(controller_url=url)) == "support.acme.example"
    monkeypatch.setenv("HELPLINE_DIAG_RESOLVE", "intranet.acme.example")
    assert network.resolve_name(Context(controller_url=url)) == "intranet.acme.example"
    assert network.resolve_name(Context(resolve_name="given")) == "given"


def test_pressure_parses_psi_or_says_none() -> None:
    value = pressure("memory")
    if value is not None:
        assert set(value) <= {"some", "full"}
        assert set(value["some"]) == {"avg10", "avg60", "avg300"}
    assert pressure("no-such-resource") is None


def test_commands_are_bounded_and_failures_are_readable() -> None:
    assert run([sys.executable, "-c", "print('ok')"], 10) == "ok\n"
    with pytest.raises(CollectorError, match="not installed"):
        run(["helpline-no-such-program"], 5)
    with pytest.raises(CollectorError, match="exited 3: boom"):
        run([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"], 10)
    with pytest.raises(CollectorError, match=r"did not finish within 0.2 s"):
        run([sys.executable, "-c", "import time; time.sleep(30)"], 0.2)


# -- the package check ------------------------------------------------------------------


@pytest.fixture
def fresh_packages(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fake package manager whose check waits until the test lets it answer."""
    release = threading.Event()
    calls: list[int] = []
    stamp = ["1"]

    def check() -> dict[str, Any]:
        calls.append(1)
        release.wait(30)
        return {"available": True, "manager": "fake", "checking": False, "pending": 2}

    monkeypatch.setattr(packages, "_manager", lambda: ("fake", ("x",), check))
    monkeypatch.setattr(packages, "_stamp", lambda paths: stamp[0])
    monkeypatch.setattr(packages, "WAIT_SECONDS", 0.1)
    monkeypatch.setattr(packages, "_cache", {})
    monkeypatch.setattr(packages, "_running", None)
    yield release, calls, stamp
    release.set()


def test_a_slow_package_check_carries_on_and_the_next_snapshot_has_it(
    fresh_packages: Any,
) -> None:
    release, calls, stamp = fresh_packages
    first = packages.collect(Context())
    assert first["checking"] is True and first["pending"] is None
    again = packages.collect(Context())  # still running: no second check
    assert again["checking"] is True
    assert len(calls) == 1
    release.set()
    done = packages._running
    if done is not None:
        done.wait(10)
    answer = packages.collect(Context())
    assert answer["pending"] == 2 and answer["cached"] is True
    assert len(calls) == 1
    stamp[0] = "2"  # dpkg status or the lists changed: ask again
    packages.collect(Context())
    done = packages._running
    if done is not None:
        done.wait(10)
    assert packages.collect(Context())["pending"] == 2
    assert len(calls) == 2
