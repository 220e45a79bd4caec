"""Text that can leave the process: a str as UTF-8 can carry it.

JSON lets a client write a lone surrogate (`"\ud800"`), which Python decodes into a str
that UTF-8 cannot encode: a planId holding one made writing its rejection raise
UnicodeEncodeError, and the caller never heard back. Such characters are written as their
JSON escape (`\ud800`, six ASCII characters) wherever text is stored, logged or answered.
"""

from __future__ import annotations


def encodable(text: str) -> str:
    """`text`, with every character UTF-8 cannot encode written as its `\\uXXXX` escape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
