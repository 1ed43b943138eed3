"""Webhook delivery end to end, over loopback: `keyturn webhooks add` registers a receiver run
by this test, key lifecycle events reach it signed, and the receiver checks every signature with
its own implementation of the Standard Webhooks scheme (Python's hmac and base64).

The receiver rejects the first attempts of every message with 500, and `keyturn serve`, which
runs the delivery worker, is stopped and started again in the middle. Every event must still
arrive, in outbox order, with the same webhook-id on every attempt. Other tests cover an
endpoint that returns 410 Gone, a delivery that runs out of attempts, the admin API routes of
`keyturn serve`, and an https receiver whose certificate authority is trusted only through
`KEYTURN_WEBHOOK_CA_FILE`.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    REQUEST_TIMEOUT,
    Receiver,
    add_endpoint,
    clean_environ,
    deliveries,
    loopback_session,
    run_cli,
    run_receiver,
    run_server,
    wait_until,
)

SERVE_PATTERN = r"serving the API on (http://[0-9.:]+)\n"


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "KEYTURN_DATABASE_URL": f"sqlite://{tmp_path / 'keyturn.db'}",
        "KEYTURN_WEBHOOK_RETRY_BASE": "50ms",
        "KEYTURN_WEBHOOK_POLL_INTERVAL": "100ms",
        "KEYTURN_WEBHOOK_TIMEOUT": "5s",
        **extra,
    }


def create_key(keyturn_bin: Path, environ: dict[str, str], name: str) -> str:
    created = run_cli(
        keyturn_bin, ["keys", "create", "--name", name, "--owner", "team", "--json"], environ
    )
    return str(json.loads(created.stdout)["key_id"])


def test_every_event_arrives_after_restart(tmp_path: Path, keyturn_bin: Path) -> None:
    environ = environment(tmp_path, KEYTURN_WEBHOOK_MAX_ATTEMPTS="10")
    run_cli(keyturn_bin, ["init"], environ)
    serve = [str(keyturn_bin), "serve", "--listen", "127.0.0.1:0"]

    with run_receiver(Receiver(failures=2)) as receiver:
        add_endpoint(keyturn_bin, environ, receiver)
        first = create_key(keyturn_bin, environ, "first")
        second = create_key(keyturn_bin, environ, "second")

        with run_server(serve, environ, tmp_path / "serve-1.log", SERVE_PATTERN):
            wait_until(lambda: len(receiver.delivered()) >= 1, "the first delivery")
        run_cli(keyturn_bin, ["keys", "rotate", first, "--json"], environ)
        run_cli(keyturn_bin, ["keys", "revoke", second, "--reason", "test"], environ)
        with run_server(serve, environ, tmp_path / "serve-2.log", SERVE_PATTERN):
            wait_until(
                lambda: all(d["state"] == "delivered" for d in deliveries(keyturn_bin, environ)),
                "every delivery",
            )

        expected = deliveries(keyturn_bin, environ)
        attempts = list(receiver.attempts)
        delivered = receiver.delivered()

    assert [d["event"] for d in expected][:2] == ["authn_token_created", "authn_token_created"]
    assert {"authn_token_rotated", "authn_token_revoked"} <= {d["event"] for d in expected}
    assert all(attempt.signature_ok for attempt in attempts), attempts
    delivered_ids = [attempt.msg_id for attempt in delivered]
    assert sorted(set(delivered_ids)) == sorted(d["msg_id"] for d in expected)
    first_delivery = list(dict.fromkeys(delivered_ids))
    assert first_delivery == [d["msg_id"] for d in expected], "messages arrived out of order"
    for message in expected:
        tries = [attempt for attempt in attempts if attempt.msg_id == message["msg_id"]]
        assert len(tries) >= 3, f"{message['msg_id']} was attempted {len(tries)} times"
        assert len({attempt.body for attempt in tries}) == 1
        payload = json.loads(tries[0].body)
        assert payload["type"] == message["event"]
        assert payload["data"]["key_id"] == message["key_id"]
        assert payload["data"]["owner"] == "team"
    serve_logs = (tmp_path / "serve-1.log").read_text() + (tmp_path / "serve-2.log").read_text()
    for secret in receiver.secrets:
        assert base64.b64encode(secret).decode() not in serve_logs


def test_gone_endpoint_is_disabled(tmp_path: Path, keyturn_bin: Path) -> None:
    environ = environment(tmp_path)
    run_cli(keyturn_bin, ["init"], environ)

    with run_receiver(Receiver(failures=100, failure_status=410)) as receiver:
        endpoint_id = add_endpoint(keyturn_bin, environ, receiver)
        create_key(keyturn_bin, environ, "gone")
        run_cli(keyturn_bin, ["webhooks", "deliver", "--once"], environ)
        run_cli(keyturn_bin, ["webhooks", "deliver", "--once"], environ)
        attempts = len(receiver.attempts)

    listed = json.loads(run_cli(keyturn_bin, ["webhooks", "list", "--json"], environ).stdout)
    audit = run_cli(keyturn_bin, ["audit", "list", "--json"], environ).stdout
    assert attempts == 1
    assert listed[0]["id"] == endpoint_id
    assert listed[0]["enabled"] is False
    assert "410" in listed[0]["disabled_reason"]
    assert "webhook_endpoint_disabled" in audit


def test_dead_letter_then_retry(tmp_path: Path, keyturn_bin: Path) -> None:
    environ = environment(
        tmp_path, KEYTURN_WEBHOOK_MAX_ATTEMPTS="2", KEYTURN_WEBHOOK_RETRY_BASE="10ms"
    )
    run_cli(keyturn_bin, ["init"], environ)

    with run_receiver(Receiver(failures=2)) as receiver:
        add_endpoint(keyturn_bin, environ, receiver)
        create_key(keyturn_bin, environ, "dead")

        def dead_lettered() -> bool:
            run_cli(keyturn_bin, ["webhooks", "deliver", "--once"], environ)
            return len(deliveries(keyturn_bin, environ, "--dead")) == 1

        wait_until(dead_lettered, "the dead letter")
        dead = deliveries(keyturn_bin, environ, "--dead")
        run_cli(keyturn_bin, ["webhooks", "retry"], environ)
        run_cli(keyturn_bin, ["webhooks", "deliver", "--once"], environ)
        after = deliveries(keyturn_bin, environ)
        ids = {attempt.msg_id for attempt in receiver.attempts}

    assert dead[0]["attempts"] == 2
    assert dead[0]["last_result"].startswith("HTTP 500")
    assert after[0]["state"] == "delivered"
    assert ids == {dead[0]["msg_id"]}
    audit = run_cli(keyturn_bin, ["audit", "list", "--json"], environ).stdout
    assert "webhook_deliveries_retried" in audit


def test_admin_api_manages_webhooks(tmp_path: Path, keyturn_bin: Path) -> None:
    environ = environment(tmp_path)
    init = run_cli(keyturn_bin, ["init"], environ)
    admin = next(line for line in init.stdout.splitlines() if line.startswith("kt_live_"))
    reader = json.loads(
        run_cli(
            keyturn_bin,
            ["keys", "create", "--name", "reader", "--scope", "keyturn:keys:read", "--json"],
            environ,
        ).stdout
    )["token"]
    serve = [str(keyturn_bin), "serve", "--listen", "127.0.0.1:0"]

    with (
        run_receiver(Receiver()) as receiver,
        run_server(serve, environ, tmp_path / "serve.log", SERVE_PATTERN) as (api,),
        loopback_session() as session,
    ):

        def call(method: str, path: str, token: str = admin, **kwargs: Any) -> Any:
            headers = {"Authorization": f"Bearer {token}"}
            return session.request(
                method, f"{api}{path}", headers=headers, timeout=REQUEST_TIMEOUT, **kwargs
            )

        body = {"url": receiver.url, "allow_private_network": True}
        added = call("POST", "/v1/webhooks", json=body)
        assert added.status_code == 201, added.text
        endpoint = added.json()
        receiver.secrets.append(base64.b64decode(endpoint["secret"].removeprefix("whsec_")))
        listed = call("GET", "/v1/webhooks")
        tested = call("POST", f"/v1/webhooks/{endpoint['id']}/test")
        forbidden = call("GET", "/v1/webhooks", token=reader)
        private = call("POST", "/v1/webhooks", json={"url": "https://10.0.0.1/hook"})
        removed = call("DELETE", f"/v1/webhooks/{endpoint['id']}")
        again = call("DELETE", f"/v1/webhooks/{endpoint['id']}")
        attempts = list(receiver.attempts)

    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["webhooks"]] == [endpoint["id"]]
    assert "secret" not in listed.json()["webhooks"][0]
    assert endpoint["secret"] not in listed.text
    assert tested.status_code == 200, tested.text
    assert tested.json()["delivered"] is True
    assert len(attempts) == 1
    assert attempts[0].signature_ok
    assert json.loads(attempts[0].body)["type"] == "webhook_test"
    assert forbidden.status_code == 403
    assert private.status_code == 400
    assert "10.0.0.1" in private.json()["detail"]
    assert removed.status_code == 204
    assert again.status_code == 404
    assert again.json()["code"] == "not_found"


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Generate with openssl a certificate authority and a certificate for 127.0.0.1 that it
    signed; return the authority's certificate, the server's certificate and the server's key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed, so no test certificate can be generated")
    ca, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    request, certificate, key = directory / "req.pem", directory / "cert.pem", directory / "key.pem"
    extensions = directory / "ext.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    make_ca = [*ec, "-days", "1", "-subj", "/CN=keyturn test CA", "-keyout", str(ca_key)]
    make_request = [*ec, "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(request)]
    sign = ["-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial"]
    commands = [
        ["openssl", "req", "-x509", *make_ca, "-out", str(ca)],
        ["openssl", "req", "-new", *make_request],
        ["openssl", "x509", "-req", *sign, "-extfile", str(extensions), "-out", str(certificate)],
    ]
    for command in commands:
        subprocess.run(command, check=True, capture_output=True, timeout=30)
    return ca, certificate, key


def test_https_with_ca_file(tmp_path: Path, keyturn_bin: Path) -> None:
    ca, certificate, key = make_certificates(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certificate, key)
    trusted = environment(tmp_path, KEYTURN_WEBHOOK_CA_FILE=str(ca))
    untrusted = environment(tmp_path)
    run_cli(keyturn_bin, ["init"], trusted)

    with run_receiver(Receiver(), tls) as receiver:
        endpoint_id = add_endpoint(keyturn_bin, trusted, receiver)
        accepted = run_cli(keyturn_bin, ["webhooks", "test", endpoint_id], trusted)
        rejected = subprocess.run(
            [str(keyturn_bin), "webhooks", "test", endpoint_id],
            env=clean_environ(untrusted),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        attempts = list(receiver.attempts)

    assert receiver.url.startswith("https://")
    assert accepted.stdout.startswith("HTTP 204")
    assert rejected.returncode == 2
    assert "not accepted" in rejected.stderr
    assert len(attempts) == 1
    assert attempts[0].signature_ok
