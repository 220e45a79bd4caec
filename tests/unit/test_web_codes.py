"""How the API turns a submit answer into an HTTP status (pure: no server needed)."""

from __future__ import annotations

import pytest

from deployer.web.api_plans import submit_status


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ({"ok": True, "code": "ACCEPTED"}, 201),
        ({"ok": True, "code": "ALREADY_SUBMITTED"}, 200),
        ({"ok": True, "code": "DUPLICATE", "duplicate": True}, 200),  # intake branch's shape
        ({"ok": False, "code": "PLAN_CONFLICT"}, 409),
        ({"ok": False, "code": "PLAN_INVALID", "errors": []}, 422),
        ({"ok": False, "code": "INTERNAL_ERROR"}, 500),
        ({"ok": False, "code": "SOMETHING_NEW"}, 422),
    ],
)
def test_submit_answers_map_to_http_statuses(answer, status):
    assert submit_status(answer) == status
