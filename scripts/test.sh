#!/usr/bin/env bash
# Installs what the test suite needs, then runs it on SQLite and on PostgreSQL.
#   bash scripts/test.sh            # both backends
#   bash scripts/test.sh -k audit   # extra arguments go to pytest
# Debian packages are installed when run as root (CI, a fresh machine); a PostgreSQL server on
# 127.0.0.1:5432 (trust auth, database "test") is used when reachable, and required when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="openssl swaks libnet-ssleay-perl postfix isync offlineimap3 neomutt tmux chromium"
PG_URL="${MSSANTE_TEST_PG_URL:-postgresql://postgres@127.0.0.1:5432/test}"

install_debian_packages() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 0
  local missing=""
  for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  [ -z "$missing" ] && return 0
  echo "== installing Debian packages:$missing"
  apt-get update -qq
  # Postfix must not configure or start a system instance: tests run their own (docs/decisions/0004).
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

install_python_packages() {
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
}

postgres_reachable() {
  .venv/bin/python - "$PG_URL" <<'PY' >/dev/null 2>&1
import sys, psycopg
psycopg.connect(sys.argv[1].replace("postgresql+psycopg", "postgresql"), connect_timeout=3).close()
PY
}

start_postgres_if_needed() {
  postgres_reachable && return 0
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    sleep 2
  fi
  postgres_reachable
}

run_pytest() {  # pytest's exit code 5 means "no tests ran": that is a failure here
  local label=$1; shift
  echo "== tests on $label"
  set +e
  .venv/bin/python -m pytest "$@"
  local rc=$?
  set -e
  if [ $rc -eq 5 ]; then echo "no tests were collected on $label: failing" >&2; return 1; fi
  return $rc
}

install_debian_packages
install_python_packages
run_pytest SQLite "$@"
if start_postgres_if_needed; then
  MSSANTE_TEST_DATABASE="$PG_URL" run_pytest PostgreSQL "$@"
elif [ "${CI:-}" = "true" ]; then
  echo "PostgreSQL at $PG_URL is not reachable: CI requires it" >&2; exit 1
else
  echo "== PostgreSQL at $PG_URL not reachable: skipped the PostgreSQL run" >&2
fi
