"""The Flask extension's before_request hook decides the common request in native code and hands
every other one to Python. These tests send each kind of request several times: the first one
goes through Python, which remembers the route, and the later ones through the native hook. Every
response must be the same as the first, and the native hook must have decided the later ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import bearer, make_app, problem
from flask import Flask, Response, request
from flask.testing import FlaskClient

import keyturn.flask as keyturn_flask
from keyturn import InvalidInputError
from keyturn.flask import KeyTurn, current_key, key_rejected, key_verified
from keyturn.testing import KeyturnTestEnv

REPEATS = 3


@pytest.fixture
def slow_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the path of every request that the Python side of the hook authenticated."""
    calls: list[str] = []
    python_side = keyturn_flask._authenticate_before_request

    def recording(app: Flask, req: Any) -> Response | None:
        calls.append(req.path)
        return python_side(app, req)

    monkeypatch.setattr(keyturn_flask, "_authenticate_before_request", recording)
    return calls


def repeated(client: FlaskClient, method: str, path: str, **kwargs: Any) -> Iterator[Any]:
    for _ in range(REPEATS):
        yield client.open(path, method=method, **kwargs)


def test_valid_key_allowed_each_time(keyturn_env: KeyturnTestEnv, slow_calls: list[str]) -> None:
    app, _ = make_app(keyturn_env)
    issued = keyturn_env.create_key()
    client = app.test_client()

    for response in repeated(client, "GET", "/plain", headers=bearer(issued.token)):
        assert response.status_code == 200
        assert response.json == {"key_id": issued.key.key_id}
        assert "API-Key-Status" not in response.headers
    assert slow_calls == ["/plain"]


def test_rejections_identical_each_time(keyturn_env: KeyturnTestEnv, slow_calls: list[str]) -> None:
    app, _ = make_app(keyturn_env, KEYTURN_GUARD=False)
    issued = keyturn_env.create_key()
    revoked = keyturn_env.create_key()
    keyturn_env.revoke_key(revoked)
    client = app.test_client()
    client.get("/plain", headers=bearer(issued.token))

    cases = {
        "wrong secret": bearer(issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")),
        "revoked": bearer(revoked.token),
        "missing": {},
        "conflicting": {**bearer(issued.token), "X-API-Key": revoked.token},
    }
    for name, headers in cases.items():
        with_signal: list[Any] = []

        def receiver(sender: Any, **kwargs: Any) -> None:
            with_signal.append(kwargs["result"].code)  # noqa: B023

        key_rejected.connect(receiver)
        try:
            responses = list(repeated(client, "GET", "/plain", headers=headers))
        finally:
            key_rejected.disconnect(receiver)
        first = responses[0]
        assert first.status_code in (400, 401), name
        for response in responses:
            assert response.status_code == first.status_code, name
            assert response.get_data() == first.get_data(), name
            assert response.headers.get("WWW-Authenticate") == first.headers.get(
                "WWW-Authenticate"
            ), name
        assert len(with_signal) == REPEATS, name
    assert slow_calls == ["/plain"]


def test_public_404_and_options(keyturn_env: KeyturnTestEnv, slow_calls: list[str]) -> None:
    app, _ = make_app(keyturn_env)
    client = app.test_client()

    for response in repeated(client, "GET", "/open"):
        assert response.status_code == 200
        assert response.json == {"key_id": None}
    for response in repeated(client, "GET", "/missing"):
        assert response.status_code == 404
    for response in repeated(client, "OPTIONS", "/plain"):
        assert response.status_code == 200
        assert "GET" in response.headers["Allow"]
    # The native hook hands OPTIONS requests to Python, so their handling stays in one place.
    assert slow_calls == ["/open", *["/plain"] * REPEATS]


def test_query_token_rejected_each_time(keyturn_env: KeyturnTestEnv, slow_calls: list[str]) -> None:
    app, _ = make_app(keyturn_env)
    issued = keyturn_env.create_key()
    client = app.test_client()
    client.get("/plain", headers=bearer(issued.token))

    for response in repeated(client, "GET", f"/open?api_key={issued.token}"):
        assert response.status_code == 400
        assert problem(response)["code"] == "invalid_request"
    for response in repeated(client, "GET", "/plain?page=2", headers=bearer(issued.token)):
        assert response.status_code == 200
    assert slow_calls == ["/plain", *["/open"] * REPEATS, *["/plain"] * REPEATS]


def test_scopes_checked_each_time(keyturn_env: KeyturnTestEnv, slow_calls: list[str]) -> None:
    app, _ = make_app(keyturn_env)
    reader = keyturn_env.create_key(scopes=["orders:read"])
    writer = keyturn_env.create_key(scopes=["orders:write"])
    client = app.test_client()

    for response in repeated(client, "GET", "/writer", headers=bearer(reader.token)):
        assert response.status_code == 403
        assert problem(response)["code"] == "insufficient_scope"
    for response in repeated(client, "GET", "/writer", headers=bearer(writer.token)):
        assert response.status_code == 200
    assert slow_calls == ["/writer"]


def test_lifecycle_headers_and_receivers(
    keyturn_env: KeyturnTestEnv, slow_calls: list[str]
) -> None:
    app, _ = make_app(keyturn_env)
    active = keyturn_env.create_key()
    expiring = keyturn_env.create_key(expires_in="10d")
    client = app.test_client()
    client.get("/plain", headers=bearer(active.token))

    for response in repeated(client, "GET", "/plain", headers=bearer(expiring.token)):
        assert response.status_code == 200
        assert response.headers["API-Key-Status"] == "expiring"
        assert "API-Key-Expires" in response.headers

    verified: list[str] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        verified.append(kwargs["key"].key_id)

    key_verified.connect(receiver)
    try:
        list(repeated(client, "GET", "/plain", headers=bearer(active.token)))
    finally:
        key_verified.disconnect(receiver)
    assert verified == [active.key.key_id] * REPEATS
    assert slow_calls == ["/plain"]


def test_replaced_view_decided_again(keyturn_env: KeyturnTestEnv, slow_calls: list[str]) -> None:
    app, keyturn = make_app(keyturn_env)
    client = app.test_client()
    assert client.get("/plain").status_code == 401

    def replacement() -> Any:
        return {"replaced": True}

    app.view_functions["plain"] = keyturn.public(replacement)
    for response in repeated(client, "GET", "/plain"):
        assert response.status_code == 200
        assert response.json == {"replaced": True}
    assert slow_calls == ["/plain", "/plain"]


def test_init_app_again_new_config(keyturn_env: KeyturnTestEnv, slow_calls: list[str]) -> None:
    app, keyturn = make_app(keyturn_env)
    issued = keyturn_env.create_key()
    client = app.test_client()
    client.get("/plain", headers=bearer(issued.token))

    app.config["KEYTURN_API_KEY_HEADER"] = "X-Service-Key"
    keyturn.init_app(app)
    for response in repeated(client, "GET", "/plain", headers={"X-Service-Key": issued.token}):
        assert response.status_code == 200
        assert response.json == {"key_id": issued.key.key_id}
    for response in repeated(client, "GET", "/plain", headers={"X-API-Key": issued.token}):
        assert response.status_code == 401
    assert slow_calls == ["/plain", "/plain"]


def test_invalid_scope_fails_each_time(keyturn_env: KeyturnTestEnv) -> None:
    app = Flask(__name__)
    app.config.update({**keyturn_env.config, "TESTING": True})
    keyturn = KeyTurn()

    @app.get("/bad")
    @keyturn.required(scopes=["not a scope"])
    def bad() -> Any:
        return {"ok": True}

    keyturn.init_app(app)
    client = app.test_client()
    for _ in range(REPEATS):
        with pytest.raises(InvalidInputError, match="not a scope"):
            client.get("/bad")


def test_current_key_in_after_request(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env)
    issued = keyturn_env.create_key()
    seen: list[str | None] = []

    @app.after_request
    def record(response: Response) -> Response:
        key = current_key()
        seen.append(key.key_id if key else None)
        assert request.path == "/plain"
        return response

    client = app.test_client()
    list(repeated(client, "GET", "/plain", headers=bearer(issued.token)))
    client.get("/plain")
    assert seen == [issued.key.key_id] * REPEATS + [None]


def test_two_apps_share_extension(keyturn_env: KeyturnTestEnv) -> None:
    first, keyturn = make_app(keyturn_env)
    second = Flask("second")
    second.config.update({**keyturn_env.config, "TESTING": True, "KEYTURN_PROTECT_ALL": False})

    @second.get("/plain")
    def plain() -> Any:
        return {"open": True}

    keyturn.init_app(second)
    issued = keyturn_env.create_key()
    for _ in range(REPEATS):
        assert first.test_client().get("/plain").status_code == 401
        assert second.test_client().get("/plain").json == {"open": True}
        assert first.test_client().get("/plain", headers=bearer(issued.token)).status_code == 200


def test_stale_route_not_remembered(
    keyturn_env: KeyturnTestEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, keyturn = make_app(keyturn_env, KEYTURN_PUBLIC_ENDPOINTS=["plain"])
    client = app.test_client()
    decide = keyturn_flask._route_requirement
    reinitialised: list[bool] = []

    def decide_during_init_app(state: Any, endpoint: str, view: Any) -> Any:
        # A request that decided its route with the old config, while another thread ran
        # init_app with a config that no longer lists the endpoint as public.
        route = decide(state, endpoint, view)
        if not reinitialised:
            reinitialised.append(True)
            app.config["KEYTURN_PUBLIC_ENDPOINTS"] = []
            keyturn.init_app(app)
        return route

    monkeypatch.setattr(keyturn_flask, "_route_requirement", decide_during_init_app)
    assert client.get("/plain").status_code == 200
    monkeypatch.setattr(keyturn_flask, "_route_requirement", decide)
    for response in repeated(client, "GET", "/plain"):
        assert response.status_code == 401


def test_dict_subclass_environ_uses_python(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env)
    issued = keyturn_env.create_key()

    class HidingEnviron(dict):  # type: ignore[type-arg]
        """An environ whose ``get`` hides the Authorization header, as a middleware might."""

        def get(self, key: Any, default: Any = None) -> Any:
            if key == "HTTP_AUTHORIZATION":
                return default
            return super().get(key, default)

    inner = app.wsgi_app

    def hiding_middleware(environ: dict[str, Any], start_response: Any) -> Any:
        return inner(HidingEnviron(environ), start_response)

    app.wsgi_app = hiding_middleware  # type: ignore[method-assign]
    client = app.test_client()
    for response in repeated(client, "GET", "/plain", headers=bearer(issued.token)):
        assert response.status_code == 401
        assert problem(response)["code"] == "missing_credentials"


def test_non_utf8_header_fails_each_time(
    keyturn_env: KeyturnTestEnv,
) -> None:
    app, _ = make_app(keyturn_env)
    issued = keyturn_env.create_key()
    client = app.test_client()
    client.get("/plain", headers=bearer(issued.token))

    environ = {"HTTP_AUTHORIZATION": "Bearer \udcff"}
    for _ in range(REPEATS):
        with pytest.raises(UnicodeEncodeError) as raised:
            client.get("/plain", environ_overrides=environ)
        assert "authorization" in " ".join(getattr(raised.value, "__notes__", []))
