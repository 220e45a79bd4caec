"""The README's table of codes lists exactly the public codes (`deployer.errors.Code`):
every member documented once, and no entry for a code that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from deployer.errors import Code

README = Path(__file__).parents[2] / "README.md"


def readme_codes() -> list[str]:
    """The first-column codes of the table under the README's `### Codes` heading."""
    text = README.read_text()
    section = text.split("\n### Codes\n", 1)[1]
    section = re.split(r"\n#{2,3} ", section, maxsplit=1)[0]
    return re.findall(r"^\| `([A-Z][A-Z_]*)` \|", section, flags=re.MULTILINE)


def test_every_public_code_is_in_the_readme_table_once_and_nothing_else():
    listed = readme_codes()
    assert len(listed) > 50  # the table was found and read
    assert sorted(set(listed)) == sorted(listed), "a code is listed twice"
    assert set(listed) == {c.value for c in Code}, (
        f"undocumented: {sorted({c.value for c in Code} - set(listed))}; "
        f"stale: {sorted(set(listed) - {c.value for c in Code})}"
    )
