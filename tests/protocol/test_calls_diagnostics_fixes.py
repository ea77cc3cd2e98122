"""The diagnostics and fix calls: the names scripts use on the wire, and agents' reports."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from protocol.calls import explain
from protocol.calls.diagnostics import DiagDiff, DiagRun
from protocol.calls.fixes import FixReport, FixRun, Truncated


def test_diff_takes_from_and_to_on_the_wire() -> None:
    call = DiagDiff.model_validate({"ticket": "T-3", "from": 4, "to": 7})
    assert (call.from_, call.to) == (4, 7)
    assert call.params() == {"ticket": "T-3", "from": 4, "to": 7}
    with pytest.raises(ValidationError) as refused:
        DiagDiff.model_validate({"ticket": "T-3", "from": "4"})
    assert explain(refused.value).startswith("from:")


def test_fix_parameters_are_params_on_the_wire() -> None:
    call = FixRun.model_validate({"ticket": 1, "fix": "disk.free_space", "params": {"days": 7}})
    assert call.values == {"days": 7}
    assert call.params()["params"] == {"days": 7}


def test_collectors_and_timeout_are_checked_before_sending() -> None:
    with pytest.raises(ValidationError) as refused:
        DiagRun.model_validate({"ticket": 1, "timeout": 0})
    assert explain(refused.value).startswith("timeout:")


def test_a_report_goes_as_the_fields_it_has() -> None:
    report = FixReport(fix="a.b", status="refused", code="declined")
    assert report.data() == {"fix": "a.b", "status": "refused", "code": "declined"}
    ran = FixReport(fix="a.b", status="succeeded", exit_code=0, truncated=Truncated(stdout=True))
    assert FixReport.read(ran.data()) == ran


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {},
        {"fix": "a.b"},
        {"fix": "a.b", "status": "exploded"},
        {"fix": "a.b", "status": "succeeded", "exit_code": "zero"},
        {"fix": 5, "status": "succeeded"},
    ],
)
def test_an_agent_report_that_does_not_fit_is_none_never_an_error(data: Any) -> None:
    assert FixReport.read(data) is None


def test_fields_of_another_agent_version_are_left_out() -> None:
    report = FixReport.read({"fix": "a.b", "status": "failed", "exit_code": 3, "new": [1]})
    assert report is not None and report.exit_code == 3
