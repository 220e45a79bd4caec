"""What decoding a JSON text would build, measured on the text before anything decodes it.

Bytes alone do not bound the cost of decoding: 13 MB of nested empty lists (`[[],[],...]`,
3 bytes a list) decoded to 4.4 million Python lists and took a worker's main process to
1 GB and its pool process (the arguments pickled) to 1.2 GB, while a plan of the same size
holds a tenth as many values. So messages and plans are also measured by **elements** (JSON
values: every array, object, string, number and literal, what json.loads allocates an object
for) and **depth** (what a recursive walk needs), and refused before they are decoded.

The measure works on text in chunks (an HTTP body as it arrives) at C speed: escapes are
removed (in valid JSON, escaped backslashes then escaped quotes, left to right, is exact),
every byte but quotes, brackets, commas and the characters of numbers and literals dropped,
strings (now plain `"..."`) made one byte;
what is left counts elements (commas + containers + 1 - empty containers) and, through a
running sum, the deepest nesting. A text that is not JSON is still measured (an upper
bound), and brackets that do not balance say it is not JSON at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

#: Structure kept as is; the characters of numbers and literals become `v` (so `[1]` is not
#: an empty array); everything else (white space, colons) is dropped.
_KEEP = b'"[]{},'
_SCALAR = b"0123456789+-.eEtrufalsn"
_TO_V = bytes.maketrans(_SCALAR, b"v" * len(_SCALAR))
_DROP = bytes(b for b in range(256) if b not in _KEEP + _SCALAR)
#: Brackets as signed steps of depth (+1 opening, -1 closing), everything else dropped.
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
#: Brackets are summed in slices of this many, so a refusal comes early.
_SLICE = 1 << 20
_LISTED = 4096


@dataclass(frozen=True)
class Shape:
    """What a JSON text holds: `elements` it would decode to, its deepest `depth`, and
    whether its brackets balance (False: it cannot be JSON)."""

    elements: int
    depth: int
    balanced: bool = True

    def problem(self, max_depth: int, max_elements: int) -> str | None:
        """Why a text of this shape must not be decoded, or None."""
        if self.depth > max_depth:
            return f"nested deeper than {max_depth} levels"
        if self.elements > max_elements:
            return f"more than {max_elements} JSON values"
        if not self.balanced:
            return "not JSON (brackets do not balance)"
        return None


class Meter:
    """Measures JSON text fed in chunks. Past `stop_depth` or `stop_elements` the answer is
    known (too much): later chunks are not looked at."""

    def __init__(self, stop_depth: int = 1 << 30, stop_elements: int = 1 << 62) -> None:
        self.stop_depth = stop_depth
        self.stop_elements = stop_elements
        self.elements = 1  # the top-level value
        self.depth = 0  # current nesting
        self.deepest = 0
        self.negative = False  # a closing bracket with nothing open
        self._in_string = False
        self._backslash = b""  # a chunk ended inside an escape
        self._last = b""  # the last structure seen (an empty container may span chunks)

    def feed(self, chunk: bytes | bytearray | memoryview | str) -> Meter:
        """Measure the next chunk (any size; `json_shape` feeds large texts in slices)."""
        if self.exceeded:
            return self
        if isinstance(chunk, str):
            data = chunk.encode("utf-8", "surrogatepass")
        else:
            data = chunk if isinstance(chunk, bytes) else bytes(chunk)
        if self._backslash:
            data = self._backslash + data
        data = data.replace(b"\\\\", b"")
        self._backslash = b"\\" if data.endswith(b"\\") else b""
        if self._backslash:
            data = data[:-1]
        data = data.replace(b'\\"', b"").translate(_TO_V, _DROP)
        # Quotes now only delimit strings: the parts between them alternate outside and
        # inside a string (the first part is inside when a string ran on from the last chunk).
        parts = data.split(b'"')
        began_inside = self._in_string
        outside = parts[1::2] if began_inside else parts[0::2]
        # after len(parts) - 1 quotes, inside a string again when that count is odd (from
        # outside) or even (from inside)
        self._in_string = (len(parts) % 2 == 0) != began_inside
        if self._in_string:
            outside.append(b"")  # the open string's place, counted once
        self._count(b"s".join(outside))  # a string is one value: `[""]` is not empty
        return self

    @property
    def exceeded(self) -> bool:
        return self.deepest > self.stop_depth or self.elements > self.stop_elements

    def _count(self, data: bytes) -> None:
        empties = data.count(b"[]") + data.count(b"{}")
        if self._last in (b"[", b"{") and data[:1] in (b"]", b"}"):
            empties += 1  # opened at the end of the last chunk, closed at once
        self._last = data[-1:] or self._last
        opens = data.count(b"[") + data.count(b"{")
        self.elements += data.count(b",") + opens - empties
        if self.elements > self.stop_elements:
            return
        steps = data.translate(None, _NOT_BRACKETS).translate(_STEPS)
        view = memoryview(steps).cast("b")
        for start in range(0, len(view), _SLICE):
            if self.deepest > self.stop_depth:
                return
            part = view[start : start + _SLICE]
            if len(part) <= _LISTED:  # small: one pass into a list is quicker
                sums = list(accumulate(part, initial=self.depth))
                high, low = max(sums), min(sums)
            else:  # large: two passes, no list of a million numbers
                high = max(accumulate(part, initial=self.depth))
                low = min(accumulate(part, initial=self.depth))
            self.deepest = max(self.deepest, high)
            self.negative = self.negative or low < 0
            self.depth += sum(part)

    def shape(self) -> Shape:
        balanced = self.depth == 0 and not self.negative and not self._in_string
        return Shape(self.elements, self.deepest, balanced)


#: A large text is measured in slices of this many bytes (or characters): each step copies
#: at most a slice, so measuring a 64 MB body costs a few MB, not several copies of it.
FEED_SLICE = 1 << 20


def json_shape(
    text: bytes | bytearray | memoryview | str,
    stop_depth: int = 1 << 30,
    stop_elements: int = 1 << 62,
) -> Shape:
    """The shape of a whole JSON text (measuring stops once a bound is passed)."""
    meter = Meter(stop_depth, stop_elements)
    if len(text) <= FEED_SLICE:
        return meter.feed(text).shape()
    view: str | memoryview = text if isinstance(text, str) else memoryview(text)
    for start in range(0, len(view), FEED_SLICE):
        if meter.feed(view[start : start + FEED_SLICE]).exceeded:
            break
    return meter.shape()


def json_depth_exceeds(text: bytes | bytearray | memoryview | str, limit: int) -> bool:
    """Whether JSON `text` nests arrays/objects deeper than `limit` (an unbalanced text
    counts as too deep)."""
    shape = json_shape(text, stop_depth=limit)
    return shape.depth > limit or not shape.balanced
