"""The Flask extension's own API: decorators, the init_app pattern, current_key(), signals, the
``flask keys`` commands, configuration errors and ``keyturn.testing`` used as a user would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import bearer, example, make_app, problem, run_cli
from flask import Blueprint, Flask, Response
from flask.testing import FlaskClient, FlaskCliRunner

from keyturn import ConfigurationError, InvalidInputError, IssuedKey, KeyInfo, ManualClock
from keyturn.flask import CONFIG_KEYS, KeyTurn, current_key, key_rejected, key_verified, keys_cli
from keyturn.testing import KeyturnTestEnv


@contextmanager
def received(signal: Any) -> Iterator[list[tuple[Any, dict[str, Any]]]]:
    calls: list[tuple[Any, dict[str, Any]]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append((sender, kwargs))

    signal.connect(receiver)
    try:
        yield calls
    finally:
        signal.disconnect(receiver)


# ---------------------------------------------------------------------------------------------
# Decorators and which requests are authenticated
# ---------------------------------------------------------------------------------------------


def test_required_without_arguments(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env, KEYTURN_PROTECT_ALL=False)
    issued = keyturn_env.create_key()
    client = app.test_client()

    assert client.get("/any-key").status_code == 401
    response = client.get("/any-key", headers=bearer(issued.token))
    assert response.status_code == 200
    assert response.json == {"key_id": issued.key.key_id}


def test_required_with_scopes(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env, KEYTURN_PROTECT_ALL=False)
    reader = keyturn_env.create_key(scopes=["orders:read"])
    writer = keyturn_env.create_key(scopes=["orders:write"])
    client = app.test_client()

    assert client.get("/writer", headers=bearer(reader.token)).status_code == 403
    assert client.get("/writer", headers=bearer(writer.token)).status_code == 200


def test_protect_all_off_leaves_plain_view_open(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env, KEYTURN_PROTECT_ALL=False)

    response = app.test_client().get("/plain")

    assert response.status_code == 200
    assert response.json == {"key_id": None}


def test_protect_all_on_protects_plain_view(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env)
    issued = keyturn_env.create_key()
    client = app.test_client()

    assert client.get("/plain").status_code == 401
    assert client.get("/plain", headers=bearer(issued.token)).json == {"key_id": issued.key.key_id}
    assert client.get("/open").status_code == 200


def test_required_rejects_misuse() -> None:
    keyturn = KeyTurn()

    with pytest.raises(TypeError, match="by keyword"):
        keyturn.required(["orders:read"])  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="is a string"):
        keyturn.required(scopes="orders:read")
    with pytest.raises(TypeError, match=r"already marked @keyturn\.public"):
        keyturn.required(keyturn.public(lambda: None))
    with pytest.raises(TypeError, match=r"already marked @keyturn\.required"):
        keyturn.public(keyturn.required(lambda: None))


def test_invalid_scope_raises_on_first_request(keyturn_env: KeyturnTestEnv) -> None:
    app = Flask(__name__)
    app.config.update({**keyturn_env.config, "TESTING": True})
    keyturn = KeyTurn(app)

    @app.get("/bad")
    @keyturn.required(scopes=["orders read"])
    def bad() -> Any:
        return {}

    with pytest.raises(InvalidInputError, match="orders read"):
        app.test_client().get("/bad", headers=bearer(keyturn_env.create_key().token))


def test_decorated_view_without_init_fails_closed(keyturn_env: KeyturnTestEnv) -> None:
    app = Flask(__name__)
    app.config["TESTING"] = True
    keyturn = KeyTurn()

    @app.get("/orders")
    @keyturn.required
    def orders() -> Any:
        return {"secret": "data"}

    with pytest.raises(RuntimeError, match=r"call KeyTurn\(app\) or keyturn.init_app\(app\)"):
        app.test_client().get("/orders")


def test_public_endpoint_list_still_runs_decorator(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env, KEYTURN_PUBLIC_ENDPOINTS=["any_key", "plain"])
    client = app.test_client()

    assert client.get("/plain").status_code == 200
    # The decorator's explicit requirement wins over the endpoint list.
    assert client.get("/any-key").status_code == 401


def test_static_files_protected_unless_listed(keyturn_env: KeyturnTestEnv, tmp_path: Path) -> None:
    (tmp_path / "logo.txt").write_text("logo")

    def static_status(**config: Any) -> int:
        app = Flask(__name__, static_folder=str(tmp_path), static_url_path="/static")
        app.config.update({**keyturn_env.config, "TESTING": True, **config})
        KeyTurn(app)
        return app.test_client().get("/static/logo.txt").status_code

    assert static_status() == 401
    assert static_status(KEYTURN_PUBLIC_ENDPOINTS=["static"]) == 200


def test_automatic_options_answered_without_key(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env)

    @app.route("/custom-options", methods=["GET", "OPTIONS"])
    def custom_options() -> Any:
        return {"handled": "by the view"}

    client = app.test_client()
    automatic = client.options("/writer")
    handled_by_view = client.options("/custom-options")

    assert automatic.status_code == 200
    assert "GET" in automatic.headers["Allow"]
    assert handled_by_view.status_code == 401


def test_token_in_query_of_public_view_rejected(keyturn_env: KeyturnTestEnv) -> None:
    app, keyturn = make_app(keyturn_env)
    issued = keyturn_env.create_key()
    client = app.test_client()

    with received(key_rejected) as rejected:
        response = client.get(f"/open?api_key={issued.token}")

    assert response.status_code == 400
    assert problem(response)["code"] == "invalid_request"
    assert issued.token not in response.get_data(as_text=True)
    assert [kwargs["result"].code for _, kwargs in rejected] == ["invalid_request"]
    assert [event.key_id for event in exposure_events(app, keyturn)] == [issued.key.key_id]


def exposure_events(app: Flask, keyturn: KeyTurn) -> list[Any]:
    """Flush the app's keyring and return its ``authn_token_exposed`` audit events."""
    # NOTE: flush() returns without waiting for a batch that the background writer already took,
    # so the events are polled for up to about two seconds.
    with app.app_context():
        for _ in range(40):
            keyturn.keyring.flush()
            events = keyturn.keyring.audit(event="authn_token_exposed")
            if events:
                return events
            time.sleep(0.05)
    return []


def test_token_in_query_of_unknown_path_rejected(keyturn_env: KeyturnTestEnv) -> None:
    app, keyturn = make_app(keyturn_env)
    issued = keyturn_env.create_key()
    client = app.test_client()

    unknown = client.get(f"/nope?access_token={issued.token}")
    wrong_method = client.delete(f"/open?api_key={issued.token}")

    assert unknown.status_code == 400
    assert problem(unknown)["code"] == "invalid_request"
    assert wrong_method.status_code == 400
    assert client.get("/nope").status_code == 404
    assert [event.key_id for event in exposure_events(app, keyturn)] == [issued.key.key_id]


def test_non_token_query_values_allowed(client: FlaskClient, keyturn_env: KeyturnTestEnv) -> None:
    reader = keyturn_env.create_key(scopes=["orders:read"])

    response = client.get("/orders?token=abc&key=name&page=2", headers=bearer(reader.token))
    public = client.get("/health?token=abc")

    assert response.status_code == 200
    assert public.status_code == 200


def _app_with_misordered_decorator(env: KeyturnTestEnv) -> Flask:
    """Create an app whose scoped view has @keyturn.required above the route decorator, inside a
    factory, so nothing outside the app refers to the wrapper that required made."""
    app = Flask(__name__)
    app.config.update({**env.config, "TESTING": True})
    keyturn = KeyTurn(app)

    @keyturn.required(scopes=["orders:write"])
    @app.get("/orders")
    def orders() -> Any:
        return {"secret": "data"}

    @app.get("/open")
    @keyturn.public
    def open_view() -> Any:
        return {}

    return app


def test_required_above_route_raises(keyturn_env: KeyturnTestEnv) -> None:
    app = _app_with_misordered_decorator(keyturn_env)
    reader = keyturn_env.create_key(scopes=["orders:read"])
    client = app.test_client()

    for path in ("/orders", "/open"):
        with pytest.raises(RuntimeError, match=r"'orders'.*put the route decorator"):
            client.get(path, headers=bearer(reader.token))


def test_required_above_blueprint_route_raises(keyturn_env: KeyturnTestEnv) -> None:
    app = Flask(__name__)
    app.config.update({**keyturn_env.config, "TESTING": True})
    keyturn = KeyTurn(app)
    blueprint = Blueprint("shop", __name__)

    @keyturn.required(scopes=["orders:write"])
    @blueprint.get("/orders")
    def orders() -> Any:
        return {}

    app.register_blueprint(blueprint)

    with pytest.raises(RuntimeError, match=r"'shop\.orders'"):
        app.test_client().get("/orders")


def test_required_view_registered_twice_accepted(keyturn_env: KeyturnTestEnv) -> None:
    app = Flask(__name__)
    app.config.update({**keyturn_env.config, "TESTING": True})
    keyturn = KeyTurn(app)

    def orders() -> Any:
        return {"ok": True}

    app.add_url_rule("/orders", "orders", keyturn.required(orders, scopes=["orders:read"]))
    app.add_url_rule("/public-orders", "public_orders", orders)
    app.config["KEYTURN_PUBLIC_ENDPOINTS"] = ["public_orders"]
    client = app.test_client()

    assert client.get("/orders").status_code == 401


def test_lifecycle_headers_added_to_view_response(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env)
    issued = keyturn_env.create_key(expires_in="10d")

    response = app.test_client().get("/any-key", headers=bearer(issued.token))

    assert response.status_code == 200
    assert response.headers["API-Key-Status"] == "expiring"
    assert "API-Key-Expires" in response.headers


def test_app_after_request_sees_lifecycle_headers(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env)
    seen: list[str | None] = []

    @app.after_request
    def record_status(response: Response) -> Response:
        seen.append(response.headers.get("API-Key-Status"))
        return response

    expiring = keyturn_env.create_key(expires_in="10d")
    active = keyturn_env.create_key()
    client = app.test_client()
    expiring_response = client.get("/any-key", headers=bearer(expiring.token))
    active_response = client.get("/any-key", headers=bearer(active.token))

    assert seen == ["expiring", None]
    assert expiring_response.headers["API-Key-Status"] == "expiring"
    assert active_response.status_code == 200
    assert "API-Key-Status" not in active_response.headers
    assert "API-Key-Expires" not in active_response.headers


# ---------------------------------------------------------------------------------------------
# init_app, current_key and signals
# ---------------------------------------------------------------------------------------------


def test_one_extension_serves_two_apps(make_keyturn_env: Callable[..., KeyturnTestEnv]) -> None:
    first_env, second_env = make_keyturn_env(), make_keyturn_env()
    keyturn = KeyTurn()
    first, _ = make_app(first_env, keyturn)
    second, _ = make_app(second_env, keyturn)
    issued = first_env.create_key()

    assert first.extensions["keyturn"] is not second.extensions["keyturn"]
    assert first.test_client().get("/any-key", headers=bearer(issued.token)).status_code == 200
    # The second app uses another store and pepper, so the first app's key is unknown there.
    assert second.test_client().get("/any-key", headers=bearer(issued.token)).status_code == 401


def test_init_app_twice_registers_hooks_once(keyturn_env: KeyturnTestEnv) -> None:
    app, keyturn = make_app(keyturn_env)
    first_state = app.extensions["keyturn"]
    hooks_before = list(app.before_request_funcs[None])

    keyturn.init_app(app)

    assert app.extensions["keyturn"] is not first_state
    assert app.before_request_funcs[None] == hooks_before
    assert app.cli.commands["keys"] is keys_cli
    issued = keyturn_env.create_key()
    assert app.test_client().get("/any-key", headers=bearer(issued.token)).status_code == 200


def test_current_key_none_outside_request() -> None:
    assert current_key() is None


def test_keyring_property_uses_current_app(keyturn_env: KeyturnTestEnv) -> None:
    app, keyturn = make_app(keyturn_env)

    with app.app_context():
        issued = keyturn.keyring.create("created in app code")

    assert keyturn_env.get_key(issued).name == "created in app code"


def test_key_verified_signal(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env)
    issued = keyturn_env.create_key()

    with received(key_verified) as verified, received(key_rejected) as rejected:
        app.test_client().get("/any-key", headers=bearer(issued.token))

    assert rejected == []
    assert len(verified) == 1
    sender, kwargs = verified[0]
    assert sender is app
    assert isinstance(kwargs["key"], KeyInfo)
    assert kwargs["key"].key_id == issued.key.key_id
    assert kwargs["result"].allowed is True


def test_key_rejected_signal(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env)
    issued = keyturn_env.create_key()
    keyturn_env.revoke_key(issued)
    client = app.test_client()

    with received(key_verified) as verified, received(key_rejected) as rejected:
        client.get("/any-key")
        client.get("/any-key", headers=bearer(issued.token))

    assert verified == []
    assert [kwargs["result"].code for _, kwargs in rejected] == ["missing_credentials", "revoked"]
    assert all(sender is app for sender, _ in rejected)
    missing, revoked = (kwargs for _, kwargs in rejected)
    assert missing["key"] is None
    assert revoked["key"].key_id == issued.key.key_id
    assert revoked["result"].status == 401


def test_raising_receiver_propagates(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env)

    def failing_receiver(sender: Any, **kwargs: Any) -> None:
        raise LookupError("receiver failed")

    key_rejected.connect(failing_receiver)
    try:
        with pytest.raises(LookupError, match="receiver failed"):
            app.test_client().get("/any-key")
    finally:
        key_rejected.disconnect(failing_receiver)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def test_missing_pepper_raises_at_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYTURN_PEPPER", raising=False)
    monkeypatch.delenv("KEYTURN_PEPPER_FILE", raising=False)
    app = Flask(__name__)
    app.config["KEYTURN_DATABASE_URL"] = str(tmp_path / "keyturn.db")

    with pytest.raises(ConfigurationError) as raised:
        KeyTurn(app)

    message = str(raised.value)
    assert "keyturn init" in message
    assert "KEYTURN_PEPPER" in message


def test_wrong_config_type_names_key(keyturn_env: KeyturnTestEnv) -> None:
    app = Flask(__name__)
    app.config.update({**keyturn_env.config, "KEYTURN_PROTECT_ALL": "false"})

    with pytest.raises(ConfigurationError, match="KEYTURN_PROTECT_ALL is 'false'"):
        KeyTurn(app)


def test_wrong_pepper_type_hides_value(keyturn_env: KeyturnTestEnv) -> None:
    app = Flask(__name__)
    pepper = keyturn_env.config["KEYTURN_PEPPER"].encode()
    app.config.update({**keyturn_env.config, "KEYTURN_PEPPER": pepper})

    with pytest.raises(ConfigurationError) as raised:
        KeyTurn(app)

    assert "KEYTURN_PEPPER" in str(raised.value)
    assert pepper.decode() not in str(raised.value)


def test_invalid_realm_raises_at_init(keyturn_env: KeyturnTestEnv) -> None:
    app = Flask(__name__)
    app.config.update({**keyturn_env.config, "KEYTURN_REALM": 'my "api"'})

    with pytest.raises(ConfigurationError, match="realm"):
        KeyTurn(app)


def test_defaults_set_in_app_config(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(keyturn_env)

    for key in CONFIG_KEYS:
        assert key.name in app.config
    assert app.config["KEYTURN_REALM"] == "api"
    assert app.config["KEYTURN_PROTECT_ALL"] is True


def test_custom_header_and_realm(keyturn_env: KeyturnTestEnv) -> None:
    app, _ = make_app(
        keyturn_env, KEYTURN_API_KEY_HEADER="X-Orders-Key", KEYTURN_REALM="Orders API"
    )
    issued = keyturn_env.create_key()
    client = app.test_client()

    missing = client.get("/any-key")
    with_header = client.get("/any-key", headers={"X-Orders-Key": issued.token})
    default_header = client.get("/any-key", headers={"X-API-Key": issued.token})

    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="Orders API"'
    assert "X-Orders-Key" in problem(missing)["detail"]
    assert with_header.status_code == 200
    assert default_header.status_code == 401


# ---------------------------------------------------------------------------------------------
# flask keys
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def cli(keyturn_env: KeyturnTestEnv) -> FlaskCliRunner:
    app = example.create_app({**keyturn_env.config, "TESTING": True})
    return app.test_cli_runner()


def invoke_json(cli: FlaskCliRunner, *args: str) -> Any:
    result = cli.invoke(args=["keys", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_error_line(result: Any, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_keys_create_json(cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv) -> None:
    created = invoke_json(
        cli,
        "create",
        "--name",
        "billing",
        "--owner",
        "team-a",
        "--scope",
        "orders:read",
        "--scope",
        "orders:write",
        "--expires-in",
        "30d",
        "--grace",
        "2d",
    )

    assert created["name"] == "billing"
    assert created["owner"] == "team-a"
    assert created["scopes"] == ["orders:read", "orders:write"]
    assert created["state"] == "active"
    assert created["token"].startswith("kt_live_")
    stored = keyturn_env.get_key(created["key_id"])
    assert stored.to_dict() == {k: v for k, v in created.items() if k != "token"}
    assert keyturn_env.keyring.verify(created["token"]).allowed


def test_keys_create_self_rotation_policy(cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv) -> None:
    default = invoke_json(cli, "create", "--name", "default policy")
    restricted = invoke_json(
        cli,
        "create",
        "--name",
        "restricted",
        "--no-self-rotation",
        "--max-chain-lifetime",
        "30d",
    )

    assert default["self_rotation"] is True
    assert default["max_chain_lifetime"] == "365d"
    assert restricted["self_rotation"] is False
    assert restricted["max_chain_lifetime"] == "30d"
    stored = keyturn_env.get_key(restricted["key_id"])
    assert stored.self_rotation is False
    assert stored.chain_ends_at - stored.created_at == timedelta(days=30)


def test_keys_create_text(cli: FlaskCliRunner) -> None:
    result = cli.invoke(args=["keys", "create", "--name", "billing", "--no-expiry"])

    assert result.exit_code == 0, result.output
    summary, token = result.stdout.splitlines()
    assert summary.startswith("created key ")
    assert "(billing)" in summary
    assert "expires -" in summary
    assert token.startswith("kt_live_")
    assert "only time the token is shown" in result.stderr


def test_keys_list_and_show(cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv) -> None:
    first = keyturn_env.create_key("first", owner="team-a")
    keyturn_env.advance("1s")
    second = keyturn_env.create_key("second", owner="team-b")
    keyturn_env.revoke_key(second)

    everything = invoke_json(cli, "list")
    team_a = invoke_json(cli, "list", "--owner", "team-a")
    revoked = invoke_json(cli, "list", "--state", "revoked")
    first_details = invoke_json(cli, "show", first.key.key_id)
    table = cli.invoke(args=["keys", "list"])
    details = cli.invoke(args=["keys", "show", second.key.key_id])

    assert [key["name"] for key in everything] == ["first", "second"]
    assert [key["key_id"] for key in team_a] == [first.key.key_id]
    assert [key["key_id"] for key in revoked] == [second.key.key_id]
    assert first_details["key_id"] == first.key.key_id
    assert table.stdout.splitlines()[0].split() == [
        "KEY",
        "ID",
        "NAME",
        "OWNER",
        "STATE",
        "EXPIRES",
    ]
    assert second.key.key_id in table.stdout
    assert "state              revoked" in details.stdout
    assert second.token not in details.stdout


def test_keys_rotate_json(cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv) -> None:
    old = keyturn_env.create_key("rotating", scopes=["orders:read"])

    rotated = invoke_json(cli, "rotate", old.key.key_id, "--overlap", "2h")

    assert rotated["predecessor_id"] == old.key.key_id
    assert rotated["scopes"] == ["orders:read"]
    assert rotated["token"].startswith("kt_live_")
    assert rotated["predecessor"]["key_id"] == old.key.key_id
    assert rotated["predecessor"]["state"] == "superseded"
    assert rotated["predecessor"]["successor_id"] == rotated["key_id"]


def test_keys_revoke(cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv) -> None:
    issued = keyturn_env.create_key()

    revoked = invoke_json(cli, "revoke", issued.key.key_id, "--reason", "leaked")
    again = cli.invoke(args=["keys", "revoke", issued.key.key_id])

    assert revoked["state"] == "revoked"
    assert revoked["revocation_reason"] == "leaked"
    assert_error_line(again, issued.key.key_id, "already revoked")


def test_keys_revoke_owner(cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv) -> None:
    first = keyturn_env.create_key("first", owner="team-a")
    second = keyturn_env.create_key("second", owner="team-a")
    other = keyturn_env.create_key("other", owner="team-b")
    keyturn_env.revoke_key(second)

    dry = invoke_json(cli, "revoke", "--owner", "team-a", "--dry-run")
    after_dry = invoke_json(cli, "show", first.key.key_id)
    report = invoke_json(cli, "revoke", "--owner", "team-a", "--reason", "offboarded")
    text = cli.invoke(args=["keys", "revoke", "--owner", "team-a"])
    both = cli.invoke(args=["keys", "revoke", first.key.key_id, "--owner", "team-a"])

    assert dry["dry_run"] is True
    assert sorted(key["key_id"] for key in dry["keys"]) == sorted(
        [first.key.key_id, second.key.key_id]
    )
    assert after_dry["state"] == "active"
    assert (report["revoked"], report["already_revoked"]) == (1, 1)
    assert invoke_json(cli, "show", first.key.key_id)["revocation_reason"] == "offboarded"
    assert invoke_json(cli, "show", other.key.key_id)["state"] == "active"
    assert text.exit_code == 0, text.output
    assert "revoked 0 key(s); 2 were already revoked" in text.stdout
    assert both.exit_code == 2
    assert "exactly one of" in both.output


def test_keys_errors_are_one_line(cli: FlaskCliRunner) -> None:
    assert_error_line(
        cli.invoke(args=["keys", "show", "AAAAAAAAAAAA"]), "AAAAAAAAAAAA", "not found"
    )
    assert_error_line(cli.invoke(args=["keys", "show", "short"]), "short")
    assert_error_line(
        cli.invoke(args=["keys", "create", "--name", "x", "--expires-in", "ninety days"]),
        "ninety days",
    )
    assert_error_line(
        cli.invoke(args=["keys", "create", "--name", "x", "--expires-in", "1d", "--no-expiry"]),
        "--expires-in",
        "--no-expiry",
    )
    assert_error_line(cli.invoke(args=["keys", "create", "--name", "x", "--scope", "a b"]), "a b")


def test_keys_list_rejects_unknown_state(cli: FlaskCliRunner) -> None:
    result = cli.invoke(args=["keys", "list", "--state", "sleeping"])

    assert result.exit_code == 2
    assert "Invalid value for '--state'" in result.output
    assert "'sleeping'" in result.output
    assert "superseded" in result.output
    assert "Traceback" not in result.output


def test_keys_show_escapes_free_text(cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv) -> None:
    issued = keyturn_env.keyring.create(
        "billing\u202etxt.exe\\n",
        owner="team\u2028a",
        metadata={"note": "line\nbreak\u0085"},
    )

    details = cli.invoke(args=["keys", "show", issued.key.key_id])
    table = cli.invoke(args=["keys", "list"])

    assert details.exit_code == 0, details.output
    assert "billing\\u{202e}txt.exe\\\\n\n" in details.stdout
    assert "team\\u{2028}a\n" in details.stdout
    assert '{"note": "line\\nbreak\\u0085"}\n' in details.stdout
    for output in (details.stdout, table.stdout):
        assert "\u202e" not in output
        assert "\u2028" not in output
        assert "\u0085" not in output


def make_migrations(keyturn_env: KeyturnTestEnv) -> tuple[IssuedKey, IssuedKey, IssuedKey]:
    """Rotate three keys and use them so that their clients moved, use both keys, and have not
    moved. Return the old keys in the report's order, the soonest end of overlap first."""
    keyring = keyturn_env.keyring
    moved = keyturn_env.create_key("moved", owner="team-a")
    both = keyturn_env.create_key("both\u202etxt", owner="team-a")
    waiting = keyturn_env.create_key("waiting", owner="team-b")
    keyturn_env.advance("1s")
    moved_successor = keyturn_env.rotate_key(moved, overlap="3d")
    both_successor = keyturn_env.rotate_key(both, overlap="1d")
    keyturn_env.rotate_key(waiting, overlap="2d")

    for step in ([moved, waiting], [moved_successor, both_successor], [both]):
        keyturn_env.advance("1s")
        for issued in step:
            assert keyring.verify(issued.token).allowed
        keyring.flush()
    return both, waiting, moved


def test_keys_migration_report(cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv) -> None:
    both, waiting, moved = make_migrations(keyturn_env)

    report = invoke_json(cli, "migration-report")
    team_b = invoke_json(cli, "migration-report", "--owner", "team-b")
    table = cli.invoke(args=["keys", "migration-report"])
    nobody = cli.invoke(args=["keys", "migration-report", "--owner", "nobody"])

    assert [entry["key_id"] for entry in report] == [
        both.key.key_id,
        waiting.key.key_id,
        moved.key.key_id,
    ]
    assert [entry["status"] for entry in report] == ["both", "not_moved", "moved"]
    assert [entry["uses_since_rotation"] for entry in report] == [1, 1, 1]
    assert report[1]["successor_first_used_at"] is None
    assert report[0]["name"] == "both\u202etxt"
    assert [entry["key_id"] for entry in team_b] == [waiting.key.key_id]

    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].startswith("KEY ID  ")
    assert "USES SINCE ROTATION" in lines[0]
    status_column = lines[0].index("STATUS")
    statuses = [line[status_column:].split()[0] for line in lines[1:]]
    assert statuses == ["both", "not_moved", "moved"]
    assert "both\\u{202e}txt" in table.stdout
    assert "\u202e" not in table.stdout
    assert nobody.stdout == "no keys in their overlap window\n"


def test_native_migration_report_values(keyturn_env: KeyturnTestEnv) -> None:
    both, _, moved = make_migrations(keyturn_env)

    entries = keyturn_env.keyring.migration_report(owner="team-a")

    assert [entry.key_id for entry in entries] == [both.key.key_id, moved.key.key_id]
    first = entries[0]
    assert first.status == "both"
    assert first.owner == "team-a"
    assert first.rotated_at.tzinfo is not None
    assert first.overlap_ends_at - first.rotated_at == timedelta(days=1)
    assert first.last_used_at is not None
    assert first.successor_first_used_at is not None
    assert first.last_used_at > first.successor_first_used_at
    assert first.last_client_addr is None
    assert first.uses_since_rotation == 1
    assert first.successor_id == keyturn_env.get_key(both).successor_id
    assert first.to_dict()["rotated_at"].endswith("Z")
    assert repr(first) == f'MigrationEntry(key_id="{both.key.key_id}", status="both")'


def test_keys_migration_report_matches_cli(
    cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv, keyturn_bin: Path
) -> None:
    make_migrations(keyturn_env)

    flask_report = invoke_json(cli, "migration-report")
    native = run_cli(keyturn_bin, ["keys", "migration-report", "--json"], keyturn_env.environ)

    assert flask_report == json.loads(native.stdout)


def test_keys_without_extension_names_fix() -> None:
    app = Flask(__name__)
    app.cli.add_command(keys_cli)

    result = app.test_cli_runner().invoke(args=["keys", "list"])

    assert_error_line(result, "KeyTurn(app)")


def test_keys_json_fields_match_cli(
    cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv, keyturn_bin: Path
) -> None:
    issued = keyturn_env.create_key("compared", scopes=["orders:read"])

    flask_fields = invoke_json(cli, "show", issued.key.key_id)
    native = run_cli(
        keyturn_bin, ["keys", "show", issued.key.key_id, "--json"], keyturn_env.environ
    )
    cli_fields = json.loads(native.stdout)

    assert sorted(flask_fields) == sorted(cli_fields)


# ---------------------------------------------------------------------------------------------
# keyturn.testing as an application's test suite uses it
# ---------------------------------------------------------------------------------------------


def test_testing_env_drives_key_lifecycle(
    keyturn_env: KeyturnTestEnv, keyturn_clock: ManualClock
) -> None:
    app = example.create_app(keyturn_env.config)
    client = app.test_client()
    issued = keyturn_env.create_key(scopes=["orders:read"], expires_in="30d", grace="7d")

    statuses = []
    for step in ("0d", "17d", "14d", "7d"):
        keyturn_env.advance(step)
        response = client.get("/orders", headers=keyturn_env.headers(issued))
        statuses.append((response.status_code, response.headers.get("API-Key-Status")))

    assert keyturn_clock is keyturn_env.clock
    assert statuses == [(200, None), (200, "expiring"), (200, "grace"), (401, None)]


def test_testing_env_rotation_and_revocation(keyturn_env: KeyturnTestEnv) -> None:
    client = example.create_app(keyturn_env.config).test_client()
    old = keyturn_env.create_key(scopes=["orders:read"])

    new = keyturn_env.rotate_key(old, overlap="1h")
    during_overlap = client.get("/orders", headers=keyturn_env.headers(old))
    keyturn_env.advance("2h")
    after_overlap = client.get("/orders", headers=keyturn_env.headers(old))
    keyturn_env.revoke_key(new)
    after_revoke = client.get("/orders", headers=keyturn_env.headers(new))

    assert during_overlap.headers["API-Key-Status"] == "superseded"
    assert problem(after_overlap)["code"] == "rotated"
    assert problem(after_revoke)["code"] == "revoked"


def test_testing_env_custom_prefix_and_start(
    make_keyturn_env: Callable[..., KeyturnTestEnv],
) -> None:
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    env = make_keyturn_env(start=start, token_prefix="acme_test")

    issued = env.create_key()

    assert issued.token.startswith("acme_test_")
    assert issued.key.created_at == start
    assert env.now() == start
    client = example.create_app(env.config).test_client()
    assert client.get("/me", headers=env.headers(issued.token)).status_code == 200


def test_testing_env_init_app_reinitialises(keyturn_env: KeyturnTestEnv, tmp_path: Path) -> None:
    other = KeyturnTestEnv(tmp_path)
    try:
        app = example.create_app(other.config)
        issued = keyturn_env.create_key()

        keyturn_env.init_app(app)
        keyturn_env.advance("80d")
        response = app.test_client().get("/me", headers=keyturn_env.headers(issued))
    finally:
        other.close()

    assert response.status_code == 200
    assert response.headers["API-Key-Status"] == "expiring"


def test_testing_env_is_visible_to_cli(keyturn_env: KeyturnTestEnv, keyturn_bin: Path) -> None:
    issued = keyturn_env.create_key("seen by the cli")

    result = run_cli(keyturn_bin, ["keys", "list", "--json"], keyturn_env.environ)

    assert [key["key_id"] for key in json.loads(result.stdout)] == [issued.key.key_id]


def test_issued_key_repr_hides_token(keyturn_env: KeyturnTestEnv) -> None:
    issued: IssuedKey = keyturn_env.create_key()

    assert issued.token not in repr(issued)
    assert "keyturn-test.db" in repr(keyturn_env)
