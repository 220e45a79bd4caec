"""JSON-path differences, as `deployer diff` names the changed part of a value."""

from __future__ import annotations

from deployer.jsondiff import ABSENT, PathChange, around, paths, text_paths


def test_each_differing_leaf_is_named_by_its_path_in_document_order():
    before = {"tenantId": "t", "routes": [{"id": "r1", "to": "a"}], "n": 1, "flag": True}
    after = {"tenantId": "t", "routes": [{"id": "r1", "to": "b"}, {"id": "r2"}], "n": 1.0,
             "flag": 1, "odd key": None}  # fmt: skip
    assert paths(before, after) == [
        PathChange("$.routes[0].to", "a", "b"),
        PathChange("$.routes[1]", ABSENT, {"id": "r2"}),
        PathChange("$.flag", True, 1),  # true is not 1 in JSON; 1.0 is 1
        PathChange('$["odd key"]', ABSENT, None),
    ]
    assert [p.kind for p in paths({"a": 1}, {"b": 1})] == ["removed", "added"]


def test_texts_that_are_not_json_containers_have_no_paths():
    assert text_paths('{"a": 1}', '{"a": 2}') == [PathChange("$.a", 1, 2)]
    assert text_paths("plain", "text") is None
    assert text_paths("1", "2") is None


def test_long_texts_are_cut_around_their_first_difference():
    before, after = around("x" * 200 + "abc" + "y" * 50, "x" * 200 + "abd" + "y" * 50, 30)
    assert "abc" in before and "abd" in after
    assert before.startswith("…") and before.endswith("…")
    assert around("same start", "same start, longer") == ("same start", "same start, longer")
