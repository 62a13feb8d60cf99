"""Every test the README names as holding a promise exists, so the table cannot point at a deleted test."""

from __future__ import annotations

import ast
import re


def named_tests(readme: str) -> list[tuple[str, str | None]]:
    """(file, test) pairs from the README's promise table; `::name` continues the file named before it."""
    start = readme.index("## What you can rely on")
    table = readme[start : readme.index("\n## ", start + 3)]
    pairs = []
    for row in table.splitlines():
        if not row.startswith("|") or "test" not in row:
            continue
        current = None
        for file, name in re.findall(r"`(test_\w+\.py)?(?:::(\w+))?`", row.split("|")[2]):
            current = file or current
            if current:
                pairs.append((current, name or None))
    return pairs


def test_every_test_the_readme_names_exists(project):
    pairs = named_tests((project / "README.md").read_text())
    assert len(pairs) >= 20
    for file, name in pairs:
        path = project / "tests" / file
        assert path.is_file(), f"README names {file}, which does not exist"
        if name:
            defined = {
                node.name
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            }
            assert name in defined, f"README names {file}::{name}, which does not exist"
