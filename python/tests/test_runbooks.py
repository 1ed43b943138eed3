"""Runs every runbook of docs/operations.md against a real SQLite store, so the runbooks cannot
drift from the product.

A runbook is a ``## `` section, and its ``sh`` code blocks are the operator's commands. They run
in order in one bash process with ``set -euo pipefail``. The `keyturn` binary is on ``PATH``, and
the deployment is configured the way the page's introduction describes.

HTML comments that start with ``runbook-setup`` or ``runbook-check`` hold commands the page does
not show: the setup creates the situation the runbook answers (a leaked token, a key revoked after
a backup), and the checks assert its outcome. They run at their place among the visible blocks.
A code block whose info string is ``LANG file=NAME`` is written to the file ``NAME`` in the
working directory before the commands that follow it run.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO_ROOT, clean_environ

OPERATIONS = REPO_ROOT / "docs" / "operations.md"
RUNBOOK_TIMEOUT = 180.0

# Shell functions the hidden checks use. They read keyturn's JSON with Python, because the
# machines that run the tests are not guaranteed to have jq.
CHECK_FUNCTIONS = r"""
json_field() { python3 -c 'import json, sys; value = json.load(sys.stdin)
for part in sys.argv[1].split("."):
    value = value[int(part)] if isinstance(value, list) else value[part]
print(value)' "$1"; }
key_state() { keyturn keys show "$1" --json | json_field state; }
expect_state() {
    local actual
    actual=$(key_state "$1")
    [ "$actual" = "$2" ] || { echo "check failed: key $1 is $actual, expected $2" >&2; exit 1; }
}
fail() { echo "check failed: $*" >&2; exit 1; }
"""

BLOCK = re.compile(
    r"^```(?P<info>[^\n]*)\n(?P<code>.*?)^```[ \t]*$"
    r"|^<!--[ \t]*(?P<hidden>runbook-setup|runbook-check)[ \t]*\n(?P<hidden_code>.*?)^-->[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


@dataclass
class Runbook:
    title: str
    script: list[str] = field(default_factory=list)
    visible_commands: int = 0


def parse_runbooks(text: str) -> list[Runbook]:
    """Split the page into runbooks and turn each into the lines of one bash script."""
    runbooks: list[Runbook] = []
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        title, _, body = section.partition("\n")
        runbook = Runbook(title.strip())
        for match in BLOCK.finditer(body):
            if match["hidden"]:
                runbook.script.append(match["hidden_code"])
                continue
            info = match["info"].split()
            if not info:
                continue
            file_name = next((word[5:] for word in info[1:] if word.startswith("file=")), None)
            if file_name:
                heredoc = f"cat > {file_name} <<'RUNBOOK_FILE'\n{match['code']}RUNBOOK_FILE\n"
                runbook.script.append(heredoc)
            elif info[0] == "sh":
                runbook.script.append(match["code"])
                runbook.visible_commands += 1
        runbooks.append(runbook)
    return runbooks


RUNBOOKS = parse_runbooks(OPERATIONS.read_text(encoding="utf-8"))


def test_every_section_has_commands() -> None:
    assert RUNBOOKS, "docs/operations.md has no runbook"
    for runbook in RUNBOOKS:
        assert runbook.visible_commands, f"runbook {runbook.title!r} shows no sh block to run"


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=[runbook.title for runbook in RUNBOOKS])
def test_runbook_runs(runbook: Runbook, keyturn_bin: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "keyturn").symlink_to(keyturn_bin)
    work = tmp_path / "work"
    work.mkdir()
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    environ = clean_environ(
        {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "KEYTURN_DATABASE_URL": f"sqlite://{tmp_path / 'data' / 'keyturn.db'}",
            "KEYTURN_PEPPER_FILE": str(secrets_dir / "keyturn.pepper"),
            "KEYTURN_AUDIT_KEY_FILE": str(secrets_dir / "keyturn.audit-key"),
            "USER": "operator",
            "LOGNAME": "operator",
            "HOME": str(tmp_path),
        }
    )
    (tmp_path / "data").mkdir()
    prologue = "set -euo pipefail\n" + CHECK_FUNCTIONS + "keyturn init > init.txt\n"
    script = prologue + "\n".join(runbook.script)

    result = subprocess.run(
        ["bash", "-c", script],
        cwd=work,
        env=environ,
        capture_output=True,
        text=True,
        timeout=RUNBOOK_TIMEOUT,
        check=False,
    )

    assert result.returncode == 0, (
        f"runbook {runbook.title!r} failed with exit code {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
