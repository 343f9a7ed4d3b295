#!/usr/bin/env bash
# Run Herald all-in-one from a fresh clone: checks for cargo and Postgres (starting the local cluster if it is
# installed but stopped), then builds and starts `herald run`. Extra arguments go to `herald`, e.g.
#   HERALD_TELEGRAM_BOT_TOKEN=123:abc ./scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'run: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

command -v cargo >/dev/null || die "cargo is missing: install Rust with rustup (https://rustup.rs), then run this again"

if [ -z "${DATABASE_URL:-}" ] && ! port_open 127.0.0.1 5432; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    say "Postgres is not answering on 127.0.0.1:5432; starting the local cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do port_open 127.0.0.1 5432 && break; sleep 1; done
  fi
  port_open 127.0.0.1 5432 || die "no PostgreSQL on 127.0.0.1:5432: install and start PostgreSQL, or set DATABASE_URL=postgres://user:password@host:port/herald"
fi

cargo build --release --locked --bin herald
herald=target/release/herald
if [ $# -eq 0 ]; then
  # A fresh install has no API key; make the first admin key (shown once) so the API can be used at all.
  if "$herald" keys list | grep -q '"role": "admin"'; then
    say "API keys exist (herald keys list); use yours as: Authorization: Bearer <key>"
  else
    say "no admin API key yet; creating one. Store it now: it is shown only this once"
    "$herald" keys create --role admin --name bootstrap
  fi
  exec "$herald" run
fi
exec "$herald" "$@"
