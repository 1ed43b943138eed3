"""Native state after a fork that runs no Python at-fork function.

uWSGI forks its workers with the C library's ``fork()`` unless ``py-call-osafterfork`` is set,
so no ``os.register_at_fork`` function runs in the child. A keyring that a parent used before
such a fork must still start its own runtime in the child: the parent's has no threads there,
so the child would write nothing and hang when it closes the keyring.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

import pytest

from keyturn import Keyring
from keyturn.testing import KeyturnTestEnv

CHILD_TIMEOUT = 10.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="calls the C library's fork()")
def test_c_fork_child_gets_own_state(keyturn_env: KeyturnTestEnv) -> None:
    used = keyturn_env.create_key()
    fresh = keyturn_env.create_key()
    config = keyturn_env.config
    keyring = Keyring(database_url=config["KEYTURN_DATABASE_URL"], pepper=config["KEYTURN_PEPPER"])
    assert keyring.verify(used.token).allowed
    # A fork in the middle of a SQLite write leaves the child unable to open the store (see the
    # NOTE on Keyring.open_process), so the parent writes the first use of the key first.
    keyring.flush()
    # PyDLL keeps the GIL across the call, so the child's only thread holds it.
    c_fork = ctypes.PyDLL(None).fork
    c_fork.restype = ctypes.c_int

    pid = c_fork()
    if pid == 0:
        # The child writes the first use of a key that was never used, then closes the keyring,
        # which waits for its background writer.
        code = 1
        try:
            if keyring.verify(fresh.token).allowed:
                keyring.close()
                code = 0
        except Exception as error:
            print(f"forked child failed: {error!r}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)

    deadline = time.monotonic() + CHILD_TIMEOUT
    status = None
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail(f"the forked child did not finish within {CHILD_TIMEOUT} s")
    assert os.waitstatus_to_exitcode(status) == 0
    keyring.close()
    assert keyturn_env.get_key(fresh).first_used_at is not None
