"""The gunicorn entry point of the tests: the example app with every Python logger at DEBUG,
writing to stderr, so the log test captures everything the app and keyturn could log.
"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "flask_app"))

from app import create_app

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
application = create_app()
