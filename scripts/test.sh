#!/usr/bin/env bash
# Herald's whole test suite, from a fresh clone: installs what it lacks (tansu, a Kafka-protocol broker; aiosmtpd,
# an SMTP server, and schemathesis, an OpenAPI fuzzer, into a Python venv in .herald/; Debian's Chromium and
# Playwright's playwright-core for the dashboard's browser test), starts what it needs (tansu on a free port, in
# memory; the email tests start their own aiosmtpd), checks formatting and lints, runs every test against the real
# Postgres, the real broker and real SMTP servers, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
AIOSMTPD_VERSION=1.4.6
SCHEMATHESIS_VERSION=4.32.5
PG_HOST=${HERALD_TEST_PG_HOST:-127.0.0.1}
PG_PORT=${HERALD_TEST_PG_PORT:-5432}
export HERALD_TEST_DATABASE_URL=${HERALD_TEST_DATABASE_URL:-postgres://postgres@$PG_HOST:$PG_PORT/postgres}

say() { printf 'test: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

command -v cargo >/dev/null || die "cargo is missing: install Rust with rustup (https://rustup.rs), then run this again"

# --- Postgres: the real server, never a mock -------------------------------------------------------------
if ! port_open "$PG_HOST" "$PG_PORT"; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    say "Postgres is not answering on $PG_HOST:$PG_PORT; starting the local cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do port_open "$PG_HOST" "$PG_PORT" && break; sleep 1; done
  fi
  port_open "$PG_HOST" "$PG_PORT" || die "no PostgreSQL on $PG_HOST:$PG_PORT: install and start PostgreSQL (trust auth for user postgres), or set HERALD_TEST_DATABASE_URL"
fi
if command -v psql >/dev/null; then
  # Databases left behind by an interrupted earlier run.
  psql "$HERALD_TEST_DATABASE_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'herald_test_%'" 2>/dev/null |
    while read -r db; do psql "$HERALD_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
fi

# --- tansu: a Kafka-protocol broker, installed once into cargo's bin directory ----------------------------
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
TANSU="$(command -v tansu || true)"
[ -z "$TANSU" ] && [ -x "$CARGO_BIN/tansu" ] && TANSU="$CARGO_BIN/tansu"
if [ -z "$TANSU" ]; then
  say "installing tansu $TANSU_VERSION (once; it compiles for 12-20 minutes on 2 cores)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore
  TANSU="$CARGO_BIN/tansu"
fi

mkdir -p target
KAFKA_PORT=""
for _ in $(seq 1 50); do
  candidate=$((20000 + RANDOM % 20000))
  if ! port_open 127.0.0.1 "$candidate"; then KAFKA_PORT=$candidate; break; fi
done
[ -n "$KAFKA_PORT" ] || die "no free port for the broker"
"$TANSU" broker --storage-engine memory://tansu/ \
  --listener-url "tcp://127.0.0.1:$KAFKA_PORT" --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  >target/tansu.log 2>&1 &
TANSU_PID=$!
trap 'kill "$TANSU_PID" 2>/dev/null || true; wait "$TANSU_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do port_open 127.0.0.1 "$KAFKA_PORT" && break; sleep 0.2; done
port_open 127.0.0.1 "$KAFKA_PORT" || die "tansu did not start; see target/tansu.log"
export HERALD_TEST_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
# The fault-injection suite starts a broker of its own, with this binary.
export HERALD_TEST_TANSU="$TANSU"
say "tansu on $HERALD_TEST_KAFKA_BROKERS, Postgres on $PG_HOST:$PG_PORT"

# --- aiosmtpd: a real SMTP server for the email tests, in a venv of the project's own --------------------------
VENV=.herald/venv
if ! "$VENV/bin/python" -c "import aiosmtpd, sys; sys.exit(aiosmtpd.__version__ != '$AIOSMTPD_VERSION')" 2>/dev/null; then
  if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    command -v python3 >/dev/null || die "python3 is missing: install Python 3 with its venv module (Debian: apt-get install python3 python3-venv), then run this again"
    python3 -c 'import venv, ensurepip' 2>/dev/null || die "python3 has no venv module: install it (Debian: apt-get install python3-venv), then run this again"
    say "creating $VENV for aiosmtpd (once)"
    python3 -m venv --clear "$VENV" || die "python3 -m venv $VENV failed"
  fi
  say "installing aiosmtpd $AIOSMTPD_VERSION into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION" ||
    die "cannot install aiosmtpd $AIOSMTPD_VERSION into $VENV"
fi
HERALD_TEST_PYTHON="$(pwd)/$VENV/bin/python"
export HERALD_TEST_PYTHON
# schemathesis: generated requests against the OpenAPI document Herald serves (tests/api/schema_fuzz.rs).
if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  say "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" ||
    die "cannot install schemathesis $SCHEMATHESIS_VERSION into $VENV"
fi
export HERALD_TEST_SCHEMATHESIS="$(pwd)/$VENV/bin/schemathesis"

# --- Chromium and Playwright: the dashboard's end-to-end test drives a real browser ---------------------------
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi; }
CHROMIUM="${HERALD_TEST_CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$CHROMIUM" ]; then
  command -v apt-get >/dev/null || die "Chromium is missing: install it (Debian: apt-get install chromium) or set HERALD_TEST_CHROMIUM"
  say "installing Debian's chromium (once)"
  { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
    die "cannot install chromium: run 'apt-get install chromium' as root, or set HERALD_TEST_CHROMIUM"
  CHROMIUM="$(command -v chromium)"
fi
export HERALD_TEST_CHROMIUM="$CHROMIUM"
command -v node >/dev/null && command -v npm >/dev/null ||
  die "Node.js and npm are missing: install them (Debian: apt-get install nodejs npm), then run this again"
E2E=tests/e2e
# Installed once per lockfile: the copy beside the modules says which lockfile they were installed from.
if ! cmp -s "$E2E/package-lock.json" "$E2E/node_modules/.installed-from-lock.json" 2>/dev/null; then
  say "installing playwright-core for the browser test (npm ci in $E2E)"
  (cd "$E2E" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in $E2E failed"
  cp "$E2E/package-lock.json" "$E2E/node_modules/.installed-from-lock.json"
fi

# --- checks and tests ----------------------------------------------------------------------------------------
cargo fmt --all -- --check || die "code is not formatted: run cargo fmt --all"
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
