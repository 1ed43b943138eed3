"""No issued token, no secret part of one, no pepper and no audit key is written anywhere it
should not be. The test drives every lifecycle event and every rejection through the `keyturn`
CLI, `keyturn serve` and the example Flask app under gunicorn, all over loopback, with every log
at trace level. It then searches the SQLite files (with the write-ahead log), the audit export,
every log and every HTTP response body and header for each secret.

A token appears in exactly one place by design: the response or output that issues it. Those are
left out of the search.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
from conftest import (
    REQUEST_TIMEOUT,
    SECRET_LEN,
    bearer,
    clean_environ,
    loopback_session,
    run_gunicorn,
    run_server,
    split_token,
    with_bad_checksum,
    with_unknown_key_id,
    with_wrong_secret,
)

SERVE_PATTERN = (
    r"serving the API on (http://[0-9.:]+)\n.*serving the gateway endpoint on (http://[0-9.:]+)\n"
)


class Recorder:
    """Everything the test saw that must not contain a secret."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self.tokens: list[str] = []

    def response(self, what: str, response: requests.Response) -> requests.Response:
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
        self.texts.append((what, f"{response.status_code}\n{headers}\n{response.text}"))
        return response

    def issued(self, response: requests.Response) -> dict[str, Any]:
        """Keep a token from the response that issues it, which is not searched."""
        assert response.status_code == 201, response.text
        body = response.json()
        self.tokens.append(body["token"])
        return body


def run_keyturn(
    keyturn_bin: Path, args: list[str], environ: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(keyturn_bin), *args],
        env=clean_environ(environ),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_secret_anywhere(tmp_path: Path, keyturn_bin: Path) -> None:
    pepper_one = "1:" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    pepper_two = "2:" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    audit_key = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    environ = {
        "KEYTURN_DATABASE_URL": f"sqlite://{tmp_path / 'keyturn.db'}",
        "KEYTURN_PEPPER": pepper_one,
        "KEYTURN_AUDIT_KEY": audit_key,
        "RUST_LOG": "trace",
        "KEYTURN_LOG": "trace",
        "PYTHONUNBUFFERED": "1",
    }
    seen = Recorder()

    init = run_keyturn(keyturn_bin, ["init"], environ)
    assert init.returncode == 0, init.stderr
    admin = next(line for line in init.stdout.splitlines() if line.startswith("kt_live_"))
    seen.tokens.append(admin)
    seen.texts.append(("init stderr", init.stderr))

    serve_command = [
        str(keyturn_bin),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
    ]
    serve_log = tmp_path / "serve.log"
    with (
        run_server(serve_command, environ, serve_log, SERVE_PATTERN) as (api, gateway),
        run_gunicorn(environ, tmp_path / "gunicorn.log", preload=False) as flask,
        loopback_session() as session,
    ):

        def post(path: str, body: dict[str, Any], token: str = admin) -> requests.Response:
            return session.post(
                api + path, json=body, headers=bearer(token), timeout=REQUEST_TIMEOUT
            )

        def new_key(name: str, **fields: Any) -> dict[str, Any]:
            body = {"name": name, "scopes": ["orders:read"], **fields}
            return seen.issued(post("/v1/keys", body))

        active = new_key("active")
        verifier = seen.issued(post("/v1/keys", {"name": "verifier", "scopes": ["keyturn:verify"]}))
        rotated = new_key("rotated")
        revoked = new_key("revoked")
        self_rotating = new_key("self-rotating")
        short = new_key("short", expires_in="2s", grace="1s", warn_before="1s")

        successor = seen.issued(post(f"/v1/keys/{rotated['key_id']}/rotate", {"overlap": "1s"}))
        seen.response("revoke", post(f"/v1/keys/{revoked['key_id']}/revoke", {"reason": "test"}))
        self_rotation = session.post(
            api + "/v1/self/rotate", headers=bearer(self_rotating["token"]), timeout=REQUEST_TIMEOUT
        )
        seen.issued(self_rotation)

        def every_front_end(token: str) -> None:
            for url in (f"{flask}/orders", f"{gateway}/v1/auth"):
                headers = {**bearer(token), "X-Keyturn-Scopes": "orders:read"}
                seen.response(url, session.get(url, headers=headers, timeout=REQUEST_TIMEOUT))
            body = {"token": token, "scopes": ["orders:read"]}
            seen.response("verify", post("/v1/verify", body, verifier["token"]))

        # Allowed, superseded, grace, then expired and rotated after their deadlines.
        for token in (active["token"], successor["token"], rotated["token"], short["token"]):
            every_front_end(token)
        time.sleep(2.2)
        every_front_end(short["token"])
        time.sleep(1.2)
        for token in (short["token"], rotated["token"], revoked["token"]):
            every_front_end(token)

        # Every kind of invalid token, a missing scope, no credential, and a token in a URL.
        for token in (
            with_wrong_secret(active["token"]),
            with_unknown_key_id(active["token"]),
            with_bad_checksum(active["token"]),
            active["token"][:-3],
        ):
            every_front_end(token)
        seen.response("scope", session.get(f"{flask}/customers", headers=bearer(active["token"])))
        seen.response("none", session.get(f"{flask}/orders", timeout=REQUEST_TIMEOUT))
        for url in (f"{flask}/orders?api_key=", f"{api}/healthz?token=", f"{gateway}/v1/auth?key="):
            seen.response("query", session.get(url + active["token"], timeout=REQUEST_TIMEOUT))

        # Enough failures from one client address to be throttled by the gateway endpoint.
        for _ in range(25):
            wrong = with_wrong_secret(active["token"])
            headers = {**bearer(wrong), "X-Forwarded-For": "198.51.100.9"}
            seen.response("guard", session.get(f"{gateway}/v1/auth", headers=headers))

        # A leak report with a real, a forged and a malformed token, then a bulk revocation.
        leaked = new_key("leaked", owner="incident")
        new_key("bulk", owner="incident")
        reported = [leaked["token"], with_wrong_secret(active["token"]), active["token"][:-3]]
        report = post("/v1/keys/report-leak", {"tokens": reported, "source": "scanner"})
        assert report.status_code == 200, report.text
        seen.response("report-leak", report)
        bulk = post("/v1/keys/revoke", {"owner": "incident", "reason": "test"})
        assert bulk.json()["revoked"] == 1, bulk.text
        seen.response("bulk revoke", bulk)

        seen.response("audit", session.get(api + "/v1/audit?limit=500", headers=bearer(admin)))
        seen.response("keys", session.get(api + "/v1/keys?limit=500", headers=bearer(admin)))
        seen.response("metrics", session.get(api + "/metrics", timeout=REQUEST_TIMEOUT))

    # A pepper rotation: a key hashed under pepper 1 verifies under the ring 2,1 and is rehashed.
    rotated_ring = {**environ, "KEYTURN_PEPPER": f"{pepper_two},{pepper_one}"}
    verified = run_keyturn(keyturn_bin, ["keys", "verify"], rotated_ring, active["token"])
    assert verified.returncode == 0, verified.stderr
    seen.texts.append(("keys verify", verified.stdout + verified.stderr))
    for args in (["audit", "list", "--json"], ["keys", "list", "--json"], ["audit", "verify"]):
        run = run_keyturn(keyturn_bin, args, rotated_ring)
        assert run.returncode == 0, run.stderr
        seen.texts.append((" ".join(args), run.stdout + run.stderr))
    export = run_keyturn(keyturn_bin, ["audit", "export"], rotated_ring)
    seen.texts.append(("audit export", export.stdout + export.stderr))

    events = {json.loads(line).get("event") for line in export.stdout.splitlines()}
    for event in (
        "authn_token_created",
        "authn_token_rotated",
        "authn_token_self_rotated",
        "authn_token_revoked",
        "authn_token_exposed",
        "authn_token_rehashed",
        "authn_token_grace_entered",
        "authn_token_expired",
        "authn_token_superseded_used",
        "authn_pepper_rotated",
        "authn_token_fail_max",
        "authn_token_leak_reported",
        "authz_admin",
    ):
        assert event in events, f"no {event} row: {sorted(str(e) for e in events)}"

    seen.texts.append(("serve log", serve_log.read_text(errors="replace")))
    seen.texts.append(("gunicorn log", (tmp_path / "gunicorn.log").read_text(errors="replace")))
    for path in tmp_path.glob("keyturn.db*"):
        seen.texts.append((path.name, path.read_bytes().decode("latin-1")))

    needles = [("pepper", pepper_one.split(":")[1]), ("pepper", pepper_two.split(":")[1])]
    needles.append(("audit key", audit_key))
    for token in seen.tokens:
        needles.append(("token", token))
        needles.append(("secret", split_token(token)[2]))
    assert all(len(secret) == SECRET_LEN for kind, secret in needles if kind == "secret")
    for what, text in seen.texts:
        for kind, needle in needles:
            assert needle not in text, f"a {kind} appears in {what}"
