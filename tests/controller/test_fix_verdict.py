"""What a fix did to the finding it targets, from before and after."""

from __future__ import annotations

import pytest

from controller.api.fixes import verdict


@pytest.mark.parametrize(
    ("before", "after", "said"),
    [
        (True, False, "cleared"),
        (True, True, "still there"),
        (False, True, "appeared"),
        (False, False, "not present before or after"),
        (None, False, "not present after (no earlier snapshot checked)"),
        (None, True, "present after (no earlier snapshot checked)"),
    ],
)
def test_only_a_finding_that_was_there_can_clear(
    before: bool | None, after: bool, said: str
) -> None:
    assert verdict(before, after) == said
