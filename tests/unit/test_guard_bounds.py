"""The guard's shortcut: a body with fewer brackets than the depth limit and fewer bytes than
the element limit is not measured, because its shape cannot pass either limit."""

from __future__ import annotations

import json
import random

import pytest

from deployer.jsonshape import json_shape
from deployer.settings import Settings
from tasks.guard import _within_bounds


def _nested(rng: random.Random, depth: int) -> object:
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([1, "a[b{", None, True, 2.5, "x"])
    if rng.random() < 0.5:
        return [_nested(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}": _nested(rng, depth - 1) for i in range(rng.randint(0, 4))}


@pytest.mark.parametrize("as_text", [False, True])
def test_the_shortcut_never_lets_through_what_the_measure_refuses(as_text: bool) -> None:
    settings = Settings(max_message_depth=8, max_message_elements=1000)
    rng = random.Random(7)
    skipped = measured_refused = 0
    for _ in range(3000):
        text = json.dumps(_nested(rng, rng.randint(1, 12)))
        raw: bytes | str = text if as_text else text.encode()
        problem = json_shape(raw).problem(8, 1000)
        if _within_bounds(raw, settings):
            skipped += 1
            assert problem is None, text
        elif problem is not None:
            measured_refused += 1
    assert skipped > 100 and measured_refused > 100  # both sides of the shortcut were seen


def test_a_deep_small_body_is_still_measured() -> None:
    settings = Settings(max_message_depth=64, max_message_elements=3_000_000)
    assert not _within_bounds(b"[" * 65 + b"]" * 65, settings)
    assert _within_bounds(b"[" * 64 + b"]" * 64, settings)
    assert not _within_bounds("{" * 65, settings)
