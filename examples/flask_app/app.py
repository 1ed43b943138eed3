"""Example orders API protected by keyturn: orders and customers with read and write scopes, a
public health check, and an undecorated ``/me`` route that ``KEYTURN_PROTECT_ALL`` protects.

Data lives in memory per process, so each gunicorn worker has its own copy. Configuration comes
from the environment: keyturn reads ``KEYTURN_DATABASE_URL`` and ``KEYTURN_PEPPER`` or
``KEYTURN_PEPPER_FILE`` itself, and ``FLASK_*`` variables are loaded into ``app.config``.
``EXAMPLE_EXPOSE_PID=1`` adds an ``X-Worker-Pid`` header to every response, so tests can tell
which worker process handled a request.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify, request
from keyturn.flask import KeyTurn, current_key
from werkzeug.exceptions import HTTPException

keyturn = KeyTurn()


class Records:
    """An in-memory table of JSON objects with integer ids, safe to use from several threads."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._lock = threading.Lock()
        self._rows = {row["id"]: row for row in rows}
        self._ids = itertools.count(max(self._rows, default=0) + 1)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._rows.values())

    def get(self, row_id: int) -> dict[str, Any] | None:
        with self._lock:
            return self._rows.get(row_id)

    def add(self, fields: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            row = {"id": next(self._ids), **fields}
            self._rows[row["id"]] = row
            return row


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Create the example app; ``config`` overrides values loaded from the environment."""
    app = Flask(__name__)
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    keyturn.init_app(app)

    customers = Records([{"id": 1, "name": "Ada Lovelace", "email": "ada@example.com"}])
    orders = Records(
        [{"id": 1, "customer_id": 1, "item": "analytical engine", "quantity": 1}]
    )

    @app.get("/health")
    @keyturn.public
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/me")
    def me() -> Any:
        # No decorator: KEYTURN_PROTECT_ALL (on by default) requires a key anyway.
        key = current_key()
        if key is None:
            return _error(500, "KEYTURN_PROTECT_ALL is off, so /me received no key")
        return {
            "key_id": key.key_id,
            "name": key.name,
            "owner": key.owner,
            "scopes": key.scopes,
        }

    @app.get("/orders")
    @keyturn.required(scopes=["orders:read"])
    def list_orders() -> Any:
        return jsonify(orders.all())

    @app.get("/orders/<int:order_id>")
    @keyturn.required(scopes=["orders:read"])
    def get_order(order_id: int) -> Any:
        return _found(orders.get(order_id), f"order {order_id}")

    @app.post("/orders")
    @keyturn.required(scopes=["orders:write"])
    def create_order() -> Any:
        body = _json_object()
        customer_id = body.get("customer_id")
        if not isinstance(customer_id, int) or customers.get(customer_id) is None:
            return _error(422, f"customer_id {customer_id!r} names no customer")
        item = body.get("item")
        if not isinstance(item, str) or not item.strip():
            return _error(422, "item must be a non-empty string")
        quantity = body.get("quantity", 1)
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            return _error(422, f"quantity {quantity!r} must be a positive integer")
        row = orders.add(
            {"customer_id": customer_id, "item": item, "quantity": quantity}
        )
        return row, 201

    @app.get("/customers")
    @keyturn.required(scopes=["customers:read"])
    def list_customers() -> Any:
        return jsonify(customers.all())

    @app.get("/customers/<int:customer_id>")
    @keyturn.required(scopes=["customers:read"])
    def get_customer(customer_id: int) -> Any:
        return _found(customers.get(customer_id), f"customer {customer_id}")

    @app.post("/customers")
    @keyturn.required(scopes=["customers:write"])
    def create_customer() -> Any:
        body = _json_object()
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            return _error(422, "name must be a non-empty string")
        email = body.get("email")
        if email is not None and not isinstance(email, str):
            return _error(422, f"email {email!r} must be a string")
        return customers.add({"name": name, "email": email}), 201

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        return _error(error.code or 500, error.description or error.name)

    if os.environ.get("EXAMPLE_EXPOSE_PID") == "1":

        @app.after_request
        def add_worker_pid(response: Any) -> Any:
            response.headers["X-Worker-Pid"] = str(os.getpid())
            return response

    return app


def _json_object() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _found(row: dict[str, Any] | None, description: str) -> Any:
    return row if row is not None else _error(404, f"{description} not found")


def _error(status: int, detail: str) -> Any:
    return {"status": status, "detail": detail}, status
