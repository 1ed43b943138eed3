#!/usr/bin/env bash
# Serve the example API on 127.0.0.1 under gunicorn with an embedded SQLite store, after issuing
# a fresh key and printing how to call the API with it, rotate it and revoke it. `make run` builds
# everything first and then runs this script.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
state_dir=${KEYTURN_RUN_DIR:-$root/.run}
port=${PORT:-8000}
keyturn_bin=${KEYTURN_BIN:-$root/target/debug/keyturn}
venv_bin=${VENV_BIN:-$root/.venv/bin}

mkdir -p "$state_dir"
# A relative KEYTURN_RUN_DIR such as `run` would make sqlite://run/keyturn.db, which is rejected,
# so the directory is resolved first. sqlite:// followed by an absolute path is sqlite:///abs/path.
state_dir=$(cd "$state_dir" && pwd)
export KEYTURN_DATABASE_URL="sqlite://$state_dir/keyturn.db"
unset KEYTURN_PEPPER KEYTURN_PEPPER_FILE

"$keyturn_bin" init
created=$("$keyturn_bin" keys create --name "example client" --owner example \
    --scope orders:read --scope orders:write --scope customers:read --scope customers:write --json 2>/dev/null)
key_id=$(printf '%s' "$created" | "$venv_bin/python" -c 'import json, sys; print(json.load(sys.stdin)["key_id"])')
token=$(printf '%s' "$created" | "$venv_bin/python" -c 'import json, sys; print(json.load(sys.stdin)["token"])')

cat <<MESSAGE

Issued key $key_id for the example API. Its token is shown only this once:

    $token

Call the API with it:

    curl -i -H "Authorization: Bearer $token" http://127.0.0.1:$port/orders

Rotate it (the old token keeps working for the 1-day overlap window), then revoke it:

    KEYTURN_DATABASE_URL=$KEYTURN_DATABASE_URL $keyturn_bin keys rotate $key_id
    KEYTURN_DATABASE_URL=$KEYTURN_DATABASE_URL $keyturn_bin keys revoke $key_id --reason "done testing"

Serving http://127.0.0.1:$port with 2 gunicorn workers; press Ctrl-C to stop.

MESSAGE

cd "$root/examples/flask_app"
exec "$venv_bin/gunicorn" --workers 2 --bind "127.0.0.1:$port" --no-control-socket "app:create_app()"
