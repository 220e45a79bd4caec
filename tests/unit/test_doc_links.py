"""Every repository file the docs, examples and code point a reader to exists (the Node
example cited a docs/integration.md that was never written)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
CITED = re.compile(
    r"\b(?:docs|examples|benchmarks|deploy)/[A-Za-z0-9_./-]*[A-Za-z0-9_]\.(?:md|js|json|py|yaml|yml)\b"
)
SOURCES = ["README.md", "CHANGES.md", "docs", "deployer", "tasks", "stages", "examples"]


def cited() -> dict[str, str]:
    """Cited path -> the file citing it."""
    out: dict[str, str] = {}
    for name in SOURCES:
        base = ROOT / name
        files = (
            [base]
            if base.is_file()
            else [
                p
                for p in base.rglob("*")
                if p.suffix in (".md", ".py", ".js") and "node_modules" not in p.parts
            ]
        )
        for path in files:
            for found in CITED.findall(path.read_text(errors="replace")):
                out.setdefault(found, path.relative_to(ROOT).as_posix())
    return out


def test_every_cited_repository_file_exists():
    paths = cited()
    assert "docs/integration.md" in paths and "docs/contracts.md" in paths
    # from the repository's root, or (a Markdown link) from the citing file's folder
    missing = {
        p: by
        for p, by in paths.items()
        if not (ROOT / p).exists() and not (ROOT / by).parent.joinpath(p).exists()
    }
    assert missing == {}
