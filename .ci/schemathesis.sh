#!/usr/bin/env bash
# Fuzz the HTTP API against its own OpenAPI document: start `asynctask api` on a free port over a
# scratch database, run schemathesis with every check (any 5xx, any status code, header, content
# type or body the document does not allow, accepted invalid input, rejected valid input), then
# stop the server and drop the database. Exits non-zero on any failure.
#
# Needs `asynctask` and `schemathesis` on PATH (an activated virtualenv) and a PostgreSQL that
# user postgres can reach on 127.0.0.1:5432 (PGHOST/PGPORT/PGUSER override that).
# Bounded: at most MAX_EXAMPLES (default 100) cases per operation and phase: ~10 s here.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
max_examples="${MAX_EXAMPLES:-100}"
for tool in asynctask schemathesis createdb dropdb; do
    command -v "$tool" >/dev/null || { echo "schemathesis.sh: $tool is not on PATH" >&2; exit 2; }
done

db="asynctask_fuzz_$$_${RANDOM}"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:${port}"
workdir="$(mktemp -d)"
server_pid=""

cleanup() {
    status=$?
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    dropdb --if-exists --force "$db" || status=1
    if [ "$status" -ne 0 ] && [ -s "$workdir/api.log" ]; then
        echo "== API log (last 50 lines)" >&2
        tail -n 50 "$workdir/api.log" >&2
    fi
    rm -rf "$workdir"
    exit "$status"
}
trap cleanup EXIT

echo "== scratch database $db, API on $base"
createdb "$db"
export DATABASE_URL="postgresql://${PGUSER}@${PGHOST}:${PGPORT}/${db}"
export ASYNCTASK_LOG_LEVEL=WARNING
# A fuzzed GET /api/tasks/{id}?wait_seconds=N on a task nobody runs waits N seconds: cap the wait
# at 2 s (N up to 60 is still accepted), so no case nears the 10 s request timeout.
export ASYNCTASK_API_MAX_WAIT_SECONDS=2
asynctask --config config.yaml migrate
asynctask --config config.yaml api --host 127.0.0.1 --port "$port" >"$workdir/api.log" 2>&1 &
server_pid=$!

healthy() { python3 -c "import urllib.request as u; u.urlopen('$base/health', timeout=1)" 2>/dev/null; }
for _ in $(seq 1 100); do
    healthy && break
    kill -0 "$server_pid" 2>/dev/null || { echo "the API exited early" >&2; exit 1; }
    sleep 0.1
done
healthy || { echo "the API did not answer /health within 10 s" >&2; exit 1; }

echo "== schemathesis"
# The seed makes reruns comparable (SEED=... to explore further).
# Strings without NUL and encodable as UTF-8: jsonb cannot store \u0000 or a lone surrogate, the
# API refuses both with 422 (the document says so), and the positive checks would call that wrong.
# From the scratch directory: Hypothesis writes a .hypothesis/ cache into the working directory.
# .ci/schemathesis_hooks.py gives each valid Idempotency-Key a fresh value (it says why).
export PYTHONPATH="$(pwd)/.ci${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=schemathesis_hooks
cd "$workdir"
schemathesis --config-file "$root/.ci/schemathesis.toml" run "$base/api/openapi" \
    --checks all \
    --generation-allow-x00 false \
    --generation-codec utf-8 \
    --max-examples "$max_examples" \
    --request-timeout 10 \
    --generation-database none \
    --seed "${SEED:-20240601}" \
    --no-color
