"""The example app under gunicorn with a clock that the test moves: before each request, every
worker sets its ManualClock to the instant in the file that ``KEYTURN_TEST_CLOCK_FILE`` names,
in RFC 3339. Only the tests use this entry point.
"""

import os
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "flask_app"))

from app import create_app

from keyturn import ManualClock

CLOCK_FILE = Path(os.environ["KEYTURN_TEST_CLOCK_FILE"])


def _file_instant() -> datetime:
    return datetime.fromisoformat(CLOCK_FILE.read_text().strip().replace("Z", "+00:00"))


clock = ManualClock(_file_instant())
flask_app = create_app({"KEYTURN_CLOCK": clock})


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    clock.set(_file_instant())
    return flask_app(environ, start_response)
