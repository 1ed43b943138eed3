"""Checks that the docs stay true to the code: the Flask reference page documents every
configuration key with its default, and the test plan names only tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

from keyturn.flask import CONFIG_KEYS

ROOT = Path(__file__).resolve().parents[2]


def test_flask_doc_lists_every_config_key() -> None:
    text = (ROOT / "docs" / "flask.md").read_text(encoding="utf-8")
    for key in CONFIG_KEYS:
        row = f"| `{key.name}` | `{key.default!r}` |"
        assert row in text, f"docs/flask.md lacks {key.name} with default {key.default!r}"


def test_test_plan_names_existing_tests() -> None:
    plan = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    rows = [line for line in plan.splitlines() if line.startswith("| ") and "`" in line]
    sources = "\n".join(
        path.read_text(encoding="utf-8")
        for pattern in ("crates/**/*.rs", "python/tests/*.py")
        for path in ROOT.glob(pattern)
    )
    named = {name for row in rows for name in re.findall(r"`(\w+)`", row.rsplit("|", 2)[1])}

    assert len(named) > 20, "the test plan table was not found"
    for name in sorted(named):
        assert re.search(rf"\b(fn|def) {name}\(", sources), f"docs/testing.md names {name}"
