"""What a new user tripped over, each on the real CLI against one real controller (issue 12):
one link syntax, one duration syntax, SLA policy warnings, the SLA filter on either clock,
audit type patterns and the hidden auth.ok, why consent was refused, the server's log,
agents built before the catalogue, and signing the built-in catalogue.

The tests share one controller (its ``sla.toml`` has short 24/7 targets and no P4) and do
not depend on each other's order: each opens its own tickets and codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Controller, free_port, wait_until

pytestmark = pytest.mark.e2e

#: P1 breaches its first response after a second while its resolution is only at risk;
#: P4 is left out on purpose (a warning, not an error)
POLICY = """\
at_risk = 0.999
[priorities.P1]
first_response = "1s"
resolution = "1000s"
[priorities.P2]
first_response = "1d"
resolution = "2d"
[priorities.P3]
first_response = "1d"
resolution = "1w"
"""


class JsonLogController(Controller):
    """The controller of this module: ``helpline serve --log-format json``."""

    def start(self) -> None:
        log = open(self.tmp / "controller.log", "a")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controller", "serve", "--log-format", "json"],
            env=self.env,
            stdout=subprocess.DEVNULL,  # "serving on …" for people; the log is stderr
            stderr=log,
            text=True,
        )
        wait_until(self._listening, 20, "the controller to listen")

    def log_lines(self) -> list[dict[str, Any]]:
        """Every line of the server's log, each of which must be one JSON object."""
        return [json.loads(line) for line in self.log().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsonLogController]:
    base = tmp_path_factory.mktemp("rough")
    home = base / "controller"
    env = {
        **os.environ,
        "HELPLINE_HOME": str(home),
        "HELPLINE_CLIENT_CONFIG": str(base / "client.toml"),
        "HELPLINE_SLA_INTERVAL": "1",
    }
    env.pop("HELPLINE_DB", None)
    node = JsonLogController(home=home, port=free_port(), tmp=base, env=env)
    node.cli("init", "--url", node.url)
    (home / "sla.toml").write_text(POLICY)
    node.start()
    try:
        yield node
    finally:
        for agent in node.agents:
            if agent.process.poll() is None:
                agent.process.kill()
                agent.process.wait()
        node.stop()


def _err(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join(result.stderr.split())  # rich wraps long lines at the terminal width


def _open(controller: Controller, priority: str = "P3", title: str = "Drucker") -> str:
    data = controller.json(
        "ticket", "open", "--title", title, "--customer", "ACME", "--priority", priority
    )
    return str(data["id"])


def test_link_takes_kind_colon_ticket_and_reopen_names_its_reason(controller: Controller) -> None:
    first, second, third = (_open(controller) for _ in range(3))
    linked = controller.json("ticket", "link", second, f"follows:{first}")
    assert (linked["kind"], linked["other"]) == ("follows", first)
    # the older form still works, and a contradiction is refused
    assert controller.json("ticket", "link", third, first, "--kind", "blocks")["kind"] == "blocks"
    clash = controller.cli(
        "ticket", "link", third, f"relates:{first}", "--kind", "blocks", check=False
    )
    assert clash.returncode == 2 and "--kind says 'blocks'" in _err(clash)
    wrong = controller.cli("ticket", "link", third, f"causes:{first}", check=False)
    assert wrong.returncode == 2 and "KIND:T-N" in _err(wrong)
    links = controller.json("ticket", "show", second)["links"]
    assert [(x["kind"], x["ticket"]) for x in links] == [("follows", first)]

    controller.json("ticket", "resolve", first, "--resolution", "new toner")
    missing = controller.cli("ticket", "reopen", first, check=False)
    assert missing.returncode == 2 and "--reason" in _err(missing)
    reopened = controller.json("ticket", "reopen", first, "--reason", "prints blank pages")
    assert reopened["state"] == "open"


def test_one_duration_syntax_everywhere(controller: Controller, tmp_path: Path) -> None:
    ticket = _open(controller)
    assert controller.json("code", ticket, "--lifetime", "1d")["code"]
    assert controller.json("code", ticket, "--lifetime", "1h30m")["code"]
    too_long = controller.cli("code", ticket, "--lifetime", "2d", check=False)
    assert too_long.returncode == 2 and "1 second to 24 hours" in _err(too_long)
    bad = controller.cli("code", ticket, "--lifetime", "2x", check=False)
    assert bad.returncode == 2 and "not a duration: '2x'" in _err(bad)
    backwards = controller.cli("code", ticket, "--lifetime", "30m1h", check=False)
    assert backwards.returncode == 2 and "largest first" in _err(backwards)

    assert controller.json("report", "--since", "1w")["total"]["opened"] >= 1
    assert controller.json("audit", "log", "--since", "1d12h")
    policy = tmp_path / "sla.toml"
    policy.write_text(
        POLICY.replace('resolution = "1w"', 'resolution = "3d"') + "[priorities.P4]\n"
        'first_response = "2d"\nresolution = "1w"\n'
    )
    checked = controller.cli("sla", "check", "--file", str(policy), "--json")
    assert json.loads(checked.stdout)["priorities"]["P3"]["resolution_s"] == 3 * 86_400


def test_sla_check_and_serve_warn_about_priorities_without_targets(
    controller: JsonLogController, tmp_path: Path
) -> None:
    policy = tmp_path / "sla.toml"
    policy.write_text(POLICY)
    checked = controller.cli("sla", "check", "--file", str(policy))
    assert checked.returncode == 0
    assert "warning:" in checked.stderr and "no targets for P4" in _err(checked)
    assert "SLA: none" in _err(checked)
    warned = [x for x in controller.log_lines() if "no targets for P4" in x.get("message", "")]
    assert warned and warned[0]["level"] == "WARNING"
    assert controller.json("sla", "show")["warnings"]


def test_sla_filter_matches_either_clock(controller: Controller) -> None:
    ticket = _open(controller, "P1", "Server down")

    def breached() -> list[dict[str, Any]]:
        return [
            t for t in controller.json("ticket", "list", "--sla", "breached") if t["id"] == ticket
        ]

    (listed,) = wait_until(breached, 20, "the first response of the P1 ticket to breach")
    assert listed["sla"]["first_response"]["status"] == "breached"
    assert listed["sla"]["resolution"]["status"] == "at_risk"
    at_risk = [t["id"] for t in controller.json("ticket", "list", "--sla", "at-risk")]
    assert ticket in at_risk


def test_audit_type_patterns_and_unknown_types(controller: Controller) -> None:
    ticket = _open(controller)
    controller.json("code", ticket)
    types = {e["type"] for e in controller.json("audit", "log", "--type", "code.*,ticket.*")}
    assert {"code.issued", "ticket.opened"} <= types
    assert all(t.startswith(("code.", "ticket.")) for t in types)
    unknown = controller.cli("audit", "log", "--type", "consnet.refused", check=False)
    assert unknown.returncode == 2
    assert "no audit event type matches 'consnet.refused'" in _err(unknown)
    assert "consent.refused" in _err(unknown)  # the list of known types


def test_audit_log_hides_auth_ok_unless_asked(controller: Controller) -> None:
    controller.json("sessions")  # one more login, one more auth.ok
    default = controller.json("audit", "log")
    assert default and "auth.ok" not in {e["type"] for e in default}
    everything = controller.json("audit", "log", "--all")
    assert "auth.ok" in {e["type"] for e in everything}
    assert len(everything) > len(default)
    assert {e["type"] for e in controller.json("audit", "log", "--type", "auth.ok")} == {"auth.ok"}


def test_consent_refused_says_why(controller: Controller) -> None:
    ticket = _open(controller)
    # the customer answers no
    said_no = controller.start_agent(
        controller.issue_code(ticket), name="no", yes=False, stdin=subprocess.PIPE
    )
    wait_until(lambda: "Allow?" in said_no.output(), 20, "the consent prompt")
    assert said_no.process.stdin is not None
    said_no.process.stdin.write("n\n")
    said_no.process.stdin.flush()
    assert said_no.wait() == 6
    # nobody answers in time
    silent = controller.start_agent(
        controller.issue_code(ticket),
        name="silent",
        yes=False,
        stdin=subprocess.PIPE,
        env={"HELPLINE_CONSENT_TIMEOUT": "1"},
    )
    assert silent.wait() == 6
    # no terminal at all (stdin closed, no --yes)
    closed = controller.start_agent(controller.issue_code(ticket), name="closed", yes=False)
    assert closed.wait() == 6

    refused = controller.json("audit", "log", "--type", "consent.refused", "--ticket", ticket)
    assert [e["details"]["reason"] for e in refused] == ["declined", "timed_out", "no_input"]


def test_serve_logs_one_line_per_event_without_secrets(
    controller: JsonLogController, tmp_path: Path
) -> None:
    ticket = _open(controller)
    code = controller.issue_code(ticket)
    wrong = controller.start_agent("0000000000", name="wrong-code")
    assert wrong.wait() == 4
    agent = controller.start_agent(code, name="logged")
    controller.connected_session(ticket)
    agent.process.terminate()
    assert agent.wait() == 0
    # a method name with a newline, straight through the real client
    forged = "no.such\nINFO helpline.audit: agent.joined x=1"  # within 64 chars
    script = (
        "import os, sys; from pathlib import Path; from controller.cli.common import run_client; "
        "run_client(Path(os.environ['HELPLINE_HOME']), lambda c: c.call(sys.argv[1], {}))"
    )
    probe = subprocess.run(
        [sys.executable, "-c", script, forged],
        env=controller.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 2 and "no such API method" in _err(probe)

    def lines() -> list[dict[str, Any]]:
        got = controller.log_lines()  # every line parses: no value broke one in two
        return got if any(x.get("method") == forged for x in got) else []

    log = wait_until(lines, 10, "the forged call in the log")
    events = [x.get("event") for x in log]
    for expected in ("code.issued", "code.failed", "consent.given", "agent.joined", "agent.left"):
        assert expected in events, expected
    calls = [x for x in log if x.get("event") == "api.call"]
    assert any(c["method"] == "ticket.open" and c["result"] == "ok" for c in calls)
    assert any(c["method"] == forged and c["result"] == "bad_request" for c in calls)
    joined = next(x for x in log if x.get("event") == "agent.joined" and x.get("ticket") == ticket)
    assert joined["source"] == "127.0.0.1" and joined["session"].startswith("S-")
    assert "auth.ok" not in events  # one per CLI call: debug only
    text = controller.log()
    assert code not in text and code.replace("-", "") not in text
    assert "SHA256:" not in text and '"signature"' not in text and '"key"' not in text


def test_agents_built_before_the_catalogue_and_the_join_command(
    controller: Controller, tmp_path: Path
) -> None:
    ticket = _open(controller)
    assert list(controller.json("code", ticket)["join"]) == ["pip"]  # nothing built yet
    dist = tmp_path / "dist"
    built = controller.cli("package", "agent", "--out", str(dist), "--json")
    assert "no fix catalogue is published" in _err(built)
    assert json.loads(built.stdout)["fix_key"] is None

    issued = controller.json("code", ticket)
    assert issued["join"] == {"pyz": f"python3 helpline-agent.pyz join {issued['code']}"}
    shown = controller.cli("code", ticket, "--for", "deb").stdout
    assert "sudo helpline-agent join" in shown and "--config" not in shown
    assert controller.cli("code", ticket, "--for", "msi", check=False).returncode == 2

    key, bundle = tmp_path / "catalogue.key", tmp_path / "bundle.json"
    controller.cli("fixes", "keygen", "--out", str(key))
    controller.cli("fixes", "sign", "--builtin", "--key", str(key), "--out", str(bundle))
    published = controller.cli("fixes", "publish", str(bundle))
    pyz = str((dist / "helpline-agent.pyz").resolve())
    assert "rebuild them" in _err(published) and pyz in _err(published)
    assert f"helpline package agent --out {dist.resolve()}" in _err(published)

    rebuilt = controller.cli("package", "agent", "--out", str(dist), "--json")
    assert "no fix catalogue" not in rebuilt.stderr
    assert json.loads(rebuilt.stdout)["fix_key"]
    again = controller.json("fixes", "publish", str(bundle))
    assert again["rebuild"] == []


def test_fixes_sign_builtin_needs_no_checkout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}

    def helpline(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controller", *args],
            env=env,
            cwd=tmp_path,  # not the checkout: the catalogue is found where it is installed
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert helpline("fixes", "keygen", "--out", "k").returncode == 0
    signed = helpline("fixes", "sign", "--builtin", "--key", "k", "--out", "b.json", "--json")
    assert signed.returncode == 0, signed.stderr
    assert len(json.loads(signed.stdout)["fixes"]) == 12
    both = helpline("fixes", "sign", "somewhere", "--builtin", "--key", "k", "--out", "c.json")
    assert both.returncode == 2
    neither = helpline("fixes", "sign", "--key", "k", "--out", "c.json")
    assert neither.returncode == 2 and "--builtin" in " ".join(neither.stderr.split())
