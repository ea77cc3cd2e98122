"""A malicious or dying agent: what it sends is checked, and what it leaves is recorded.

Real processes over loopback TLS; the malicious agent speaks the real protocol
(``protocol.session.AgentSession``) over a real websocket, as ``test_bad_input`` does.
"""

from __future__ import annotations

from tests.e2e.test_fixes import Setup, _agent, setup  # noqa: F401 - the fixture


def test_a_huge_parameter_is_still_refused_clipped_and_audited(setup: Setup) -> None:  # noqa: F811
    agent = _agent(setup, "--allow", "disk.free_space")
    huge = "/tmp/" + "a" * 100_000  # under an allowed root, and no such file
    code, result = setup.fix_json("disk.free_space", "--param", f"root={huge}")
    assert code == 4, result
    assert result["code"] == "bad_param"
    assert "does not exist" in result["error"]
    assert "characters, clipped" in result["error"]
    assert len(result["error"]) <= 1000
    refused = setup.controller.json("audit", "log", "--type", "fix.refused")
    assert refused[-1]["details"]["code"] == "bad_param"
    assert len(refused[-1]["details"]["reason"]) <= 1000
    # the agent is alive and still serving
    assert agent.process.poll() is None
    assert "Task exception was never retrieved" not in agent.output()
    assert setup.controller.json("ping", setup.ticket)["ok"] is True
