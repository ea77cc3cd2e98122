"""The rule catalogue on recorded snapshots: each case fires exactly its rules.

The fixtures are one real snapshot of the development machine (``base.json``) edited per
case by ``tests/fixtures/snapshots/make_fixtures.py``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from controller.findings import (
    SEVERITIES,
    Catalogue,
    CatalogueError,
    compare,
    count_by_severity,
    default_catalogue,
    evaluate,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def fired(snapshot: Any) -> list[tuple[str, str, str | None]]:
    return [(f["rule"], f["severity"], f["subject"]) for f in evaluate(snapshot)]


#: case → the findings it must give, exactly, in order
EXPECTED: dict[str, list[tuple[str, str, str | None]]] = {
    "healthy": [],
    "disk_full": [
        ("disk.nearly_full", "critical", "/"),
        ("disk.nearly_full", "warning", "/home"),
    ],
    "inodes_full": [("disk.inodes_nearly_full", "warning", "/")],
    "readonly_root": [("disk.read_only", "critical", "/")],
    "io_pressure": [("disk.io_pressure", "warning", None)],
    "memory_pressure": [("memory.pressure", "warning", None)],
    "memory_exhausted": [("memory.nearly_exhausted", "critical", None)],
    "high_load": [("cpu.sustained_load", "critical", None)],
    "zombies": [("processes.zombies", "warning", None)],
    "failed_services": [
        ("services.failed", "warning", "cups.service"),
        ("services.failed", "warning", "backup.timer"),
    ],
    "dns_failing": [("network.dns_failing", "warning", None)],
    "no_default_route": [
        ("network.dns_failing", "critical", None),
        ("network.no_default_route", "critical", None),
    ],
    "controller_unreachable": [("network.controller_unreachable", "warning", None)],
    "controller_partial": [("network.controller_partly_unreachable", "info", None)],
    "clock_unsynced": [("time.not_synchronised", "warning", None)],
    "clock_far_off": [("time.not_synchronised", "critical", None)],
    "pending_reboot": [("system.pending_reboot", "warning", None)],
    "battery_degraded": [("battery.degraded", "critical", None)],
    "security_updates": [("packages.security_updates", "warning", None)],
    "updates_pending": [("packages.updates_pending", "info", None)],
    "overheating": [
        ("sensors.overheating", "critical", "coretemp Package id 0"),
        ("sensors.overheating", "warning", "nvme Composite"),
    ],
    "many_log_errors": [("logs.many_errors", "info", None)],
    "collector_errors": [("snapshot.collector_failed", "info", "network")],
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_each_recorded_case_gives_exactly_its_findings(case: str) -> None:
    assert fired(load(case)) == EXPECTED[case]


def test_every_rule_in_the_catalogue_is_covered_by_a_case() -> None:
    covered = {rule for findings in EXPECTED.values() for rule, _, _ in findings}
    assert covered == {rule.id for rule in default_catalogue().rules}


def test_the_raw_recording_shows_what_was_really_wrong_here() -> None:
    # base.json is the unedited real run: this machine's clock is not NTP-synchronised
    # and it has security updates pending
    rules = [rule for rule, _, _ in fired(load("base"))]
    assert rules == ["time.not_synchronised", "packages.security_updates"]


def test_a_finding_carries_explanation_evidence_advice_and_fix() -> None:
    (root, home) = evaluate(load("disk_full"))
    assert root["title"] == "Disk / is 97.5 % full"
    assert root["section"] == "disks"
    assert root["fix"] == "disk.free_space"
    assert "/" in root["explanation"] and "space" in root["explanation"]
    assert root["evidence"][0].startswith("/ (/dev/vda, ext4): ")
    assert "GiB used of" in root["evidence"][0] and "free" in root["evidence"][0]
    assert "du -xh" in root["advice"]
    assert home["severity"] == "warning"


def test_evidence_uses_values_from_elsewhere_in_the_snapshot() -> None:
    (load_finding,) = evaluate(load("high_load"))
    assert load_finding["evidence"] == [
        "load 9.1 / 7.4 / 5.2 (1, 5, 15 min) on 2 cores",
        "top consumers now: ffmpeg, chrome",
    ]
    (zombies,) = evaluate(load("zombies"))
    assert zombies["title"] == "12 zombie process(es)"
    assert "php-fpm" in zombies["evidence"][1]


def test_evidence_about_values_the_snapshot_lacks_is_left_out() -> None:
    (clock,) = evaluate(load("clock_unsynced"))
    # no systemd here, so no ntp_service value: that line is dropped, not shown as "?"
    assert clock["evidence"] == ["kernel clock state: unsynchronised; maximum error 16,000 ms"]


def test_severity_order_and_counts() -> None:
    findings = evaluate(load("before_fix"))
    ranks = [SEVERITIES.index(f["severity"]) for f in findings]
    assert ranks == sorted(ranks)
    assert count_by_severity(findings) == {"critical": 1, "warning": 5, "info": 0}


def test_thresholds_are_inclusive_and_escalate() -> None:
    snap = load("healthy")
    root = snap["disks"]["partitions"][0]
    for percent, expected in ((89.9, []), (90.0, ["warning"]), (96.9, ["warning"])):
        root["percent"] = percent
        assert [f[1] for f in fired(snap)] == expected, percent
    root["percent"] = 97.0
    assert fired(snap) == [("disk.nearly_full", "critical", "/")]


def test_load_is_judged_per_core() -> None:
    snap = load("high_load")
    snap["cpu"]["logical"] = 16  # the same load on 16 cores is fine
    assert fired(snap) == []
    snap["cpu"]["logical"] = 0  # no division by zero, no finding
    assert fired(snap) == []


@pytest.mark.parametrize(
    "junk",
    [
        None,
        [],
        "snapshot",
        {},
        {"disks": "full", "memory": [1, 2], "cpu": {"load_avg": "high", "logical": True}},
        {"disks": {"partitions": [None, 5, {"percent": "99"}, {"percent": True}]}},
        {"network": {"resolve": {"ok": 0}, "controller": {"reachable": None}}},
        {"errors": ["network"], "services": {"failed": {"unit": "x"}}},
        {"time": {"synchronized": "false", "offset_ms": float("nan")}},
        {"battery": {"health_percent": float("inf")}},
    ],
)
def test_malformed_snapshots_give_no_findings_and_no_crash(junk: Any) -> None:
    findings = evaluate(junk)
    assert all(f["rule"] != "disk.nearly_full" for f in findings)
    json.dumps(findings)


def test_booleans_are_not_numbers_and_strings_are_not_booleans() -> None:
    snap = load("healthy")
    snap["disks"]["partitions"][0]["percent"] = True  # True >= 90 must not hold
    snap["network"]["resolve"]["ok"] = 0  # 0 == False must not hold
    snap["time"]["synchronized"] = "false"
    assert fired(snap) == []


def test_text_from_the_snapshot_is_kept_as_text() -> None:
    snap = load("failed_services")
    snap["services"]["failed"] = [dict(snap["services"]["failed"][0], unit="[red]x{0}{$.a}")]
    (finding,) = evaluate(snap)
    assert finding["title"] == "Service [red]x{0}{$.a} has failed"


# -- before and after -------------------------------------------------------------------


def test_compare_a_fixed_machine_lists_what_was_resolved_and_what_moved() -> None:
    diff = compare(load("before_fix"), load("healthy"))
    resolved = {(f["rule"], f["subject"]) for f in diff["findings"]["resolved"]}
    assert resolved == {
        ("disk.nearly_full", "/"),
        ("disk.nearly_full", "/home"),
        ("processes.zombies", None),
        ("services.failed", "cups.service"),
        ("services.failed", "backup.timer"),
        ("system.pending_reboot", None),
    }
    assert diff["findings"]["new"] == diff["findings"]["remaining"] == []
    changes = {c["label"]: c for c in diff["changes"] if c["kind"] == "value"}
    assert changes["Disk / used"]["before_text"] == "97.5 %"
    assert changes["Disk / used"]["after_text"] == "22.3 %"
    assert changes["Disk /home used"]["after_text"] == "—"  # the mount went away
    assert changes["Zombie processes"]["before"] == 12
    assert changes["Restart pending"]["before_text"] == "yes"
    assert changes["Restart pending"]["after_text"] == "no"
    assert changes["Failed services"]["after"] == 0
    sets = {c["label"]: c for c in diff["changes"] if c["kind"] == "set"}
    assert sets["Failed services"]["removed"] == ["backup.timer", "cups.service"]
    assert sets["Failed services"]["added"] == []


def test_compare_the_other_way_round_lists_new_findings() -> None:
    diff = compare(load("healthy"), load("disk_full"))
    assert [f["subject"] for f in diff["findings"]["new"]] == ["/", "/home"]
    assert diff["findings"]["resolved"] == []


def test_compare_keeps_remaining_findings_with_their_old_severity() -> None:
    before = load("disk_full")
    after = copy.deepcopy(before)
    after["disks"]["partitions"][0]["percent"] = 92.0  # better, not good
    diff = compare(before, after)
    remaining = {f["subject"]: f for f in diff["findings"]["remaining"]}
    assert remaining["/"]["severity"] == "warning"
    assert remaining["/"]["severity_before"] == "critical"


def test_a_partial_snapshot_does_not_count_as_a_fix() -> None:
    before = load("before_fix")
    after = {k: v for k, v in load("healthy").items() if k not in ("services", "processes")}
    diff = compare(before, after)
    unchecked = {f["rule"] for f in diff["findings"]["not_compared"]}
    assert unchecked == {"services.failed", "processes.zombies"}
    labels = {c["label"] for c in diff["changes"]}
    assert "Zombie processes" not in labels and "Failed services" not in labels


def test_findings_a_partial_snapshot_never_checked_are_not_new() -> None:
    full = load("before_fix")
    partial = {k: v for k, v in full.items() if k not in ("services", "processes")}
    partial["collectors"] = [c for c in full["collectors"] if c not in ("services", "processes")]
    diff = compare(partial, full)
    assert diff["findings"]["new"] == []
    uncompared = {(f["rule"], f["seen_in"]) for f in diff["findings"]["not_compared"]}
    assert uncompared == {("services.failed", "after"), ("processes.zombies", "after")}


def test_identical_snapshots_compare_as_unchanged() -> None:
    snap = load("before_fix")
    diff = compare(snap, copy.deepcopy(snap))
    assert diff["changes"] == []
    assert diff["findings"]["resolved"] == diff["findings"]["new"] == []
    assert len(diff["findings"]["remaining"]) == len(evaluate(snap))


# -- the catalogue itself ---------------------------------------------------------------

MINIMAL = """
[[rules]]
id = "x.y"
section = "x"
severity = "warning"
when = [{ path = "x.v", op = ">=", value = 1 }]
title = "t"
explain = "e"
"""


def test_a_minimal_catalogue_loads_and_evaluates() -> None:
    catalogue = Catalogue.from_toml(MINIMAL)
    assert [f["rule"] for f in evaluate({"x": {"v": 1}}, catalogue)] == ["x.y"]
    assert evaluate({"x": {"v": 0}}, catalogue) == []


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('op = ">="', 'op = "~"'), "unknown op"),
        (('severity = "warning"', 'severity = "bad"'), "severity"),
        (('id = "x.y"', 'id = "Bad Id"'), "id must look like"),
        (('title = "t"', 'title = "{x.v|weird}"'), "unknown format"),
        (('title = "t"', 'title = "t"\ncolour = "red"'), "unknown keys"),
        ((", value = 1 }", " }"), "exactly one of value or ref"),
        (('explain = "e"', 'explain = "e"\nfix = "not an id"'), "fix must be"),
        (
            ('explain = "e"', 'explain = "e"\nescalate = [{severity = "critical", when = []}]'),
            "when must be a non-empty list",
        ),
        (
            (
                'explain = "e"',
                'explain = "e"\nescalate = [{severity = "info", when = '
                '[{path = "a", op = "exists"}]}]',
            ),
            "not above",
        ),
        (("[[rules]]", "[[rule]]"), "unknown top-level"),
        (('explain = "e"', 'explain = "e"\nfix_params = { a = "{x}" }'), "with a fix"),
    ],
)
def test_catalogue_mistakes_are_refused_with_a_reason(edit: tuple[str, str], message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        Catalogue.from_toml(MINIMAL.replace(*edit))


def test_a_rule_defined_twice_is_refused() -> None:
    with pytest.raises(CatalogueError, match="twice"):
        Catalogue.from_toml(MINIMAL + MINIMAL)


def test_a_finding_names_the_parameters_of_its_fix() -> None:
    services = evaluate(load("failed_services"))
    assert [f["fix_params"] for f in services] == [
        {"service": "cups.service"},
        {"service": "backup.timer"},
    ]
    (busy,) = evaluate(load("high_load"))
    assert busy["fix"] == "cpu.stop_runaway" and busy["fix_params"] == {"pid": "4242"}
    assert all(f["fix_params"] == {} for f in evaluate(load("disk_full")))


def test_suggested_fixes_that_exist_take_the_parameters_the_rules_give() -> None:
    import tomllib

    fixes = Path(__file__).resolve().parents[2] / "controller" / "fixes_catalogue"
    for rule in default_catalogue().rules:
        manifest = fixes / str(rule.fix) / "fix.toml"
        if rule.fix is None or not manifest.exists():
            continue  # a fix id with no fix yet is fine
        params = tomllib.loads(manifest.read_text()).get("params", {})
        for name, _ in rule.fix_params:
            assert name in params, (rule.id, rule.fix, name)
