"""The shape of JSON text, measured before it is decoded (deployer/jsonshape.py): exact for
any valid JSON, the same whatever the chunks it arrives in, and fast on hostile text."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.jsonshape import Meter, Shape, json_depth_exceeds, json_shape

#: Strings full of what confuses a scanner: quotes, backslashes, brackets, commas.
tricky = st.text(st.sampled_from('ab"\\[]{},:\n\u00e9\U0001f600 '), max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), tricky)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky, inner, max_size=4),
    max_leaves=30,
)


def truth(value: Any) -> tuple[int, int]:
    """(values, depth) as json.loads builds them: every value but object keys."""
    if isinstance(value, dict):
        inner = [truth(v) for v in value.values()]
    elif isinstance(value, list):
        inner = [truth(v) for v in value]
    else:
        return 1, 0
    return 1 + sum(n for n, _ in inner), 1 + max((d for _, d in inner), default=0)


@settings(max_examples=400, deadline=None)
@given(values, st.booleans(), st.lists(st.integers(1, 40), max_size=6))
def test_the_shape_of_valid_json_is_exact_in_any_chunks(value, ascii_only, cuts):
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    expected = Shape(*truth(value))
    assert json_shape(text) == expected
    meter, at = Meter(), 0
    for size in cuts:  # any split, even inside a string or an escape
        meter.feed(text[at : at + size])
        at += size
    assert meter.feed(text[at:]).shape() == expected


def test_unbalanced_text_is_not_json():
    assert not json_shape("[[1]").balanced
    assert not json_shape("]1[").balanced
    assert not json_shape('["abc').balanced  # a string never closed
    assert json_shape('["a]b"]').balanced


def test_problems_name_the_bound_crossed():
    assert Shape(10, 65).problem(64, 100) == "nested deeper than 64 levels"
    assert Shape(101, 3).problem(64, 100) == "more than 100 JSON values"
    assert Shape(5, 2, balanced=False).problem(64, 100) == "not JSON (brackets do not balance)"
    assert Shape(100, 64).problem(64, 100) is None


def test_depth_exceeds_as_before():
    assert json_depth_exceeds("[[[1]]]", 2) and not json_depth_exceeds("[[[1]]]", 3)
    assert not json_depth_exceeds(json.dumps({"a": '[[[[[[{{{{\\"]]'}), 3)
    assert json_depth_exceeds("[[[", 64)  # unbalanced counts as too deep


def test_thirteen_megabytes_of_nested_empty_lists_are_measured_fast():
    """The envelope that took a worker to 1 GB: 4.4 million lists, measured in well under
    a second without building one."""
    text = b"[" + b"[]," * 4_400_000 + b"[]]"
    started = time.perf_counter()
    shape = json_shape(text)
    took = time.perf_counter() - started
    assert shape == Shape(4_400_002, 2)
    print(f"\n13 MB of nested empty lists measured in {took:.2f}s")
