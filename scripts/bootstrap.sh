#!/usr/bin/env bash
# Prepares a machine for VideoAR: system packages, the virtualenv with the locked Python
# packages, compiled translations. Idempotent; `--test` adds what the test suite needs.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

say() { printf '\033[1m[videoar]\033[0m %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@";
  elif command -v sudo >/dev/null 2>&1; then sudo "$@";
  else say "need root to run: $*"; return 1; fi
}

apt_updated=0
apt_install() {
  # Installs the Debian packages given that are not installed yet.
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    say "please install these system packages: ${missing[*]}"; return 1
  fi
  say "installing system packages: ${missing[*]}"
  if [ $apt_updated = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  say "Python 3.11 or newer is required (found: $($PY --version 2>&1))"; exit 1
fi

# System packages: Redis for the embedded default, fonts for pages and PDFs, Pango and HarfBuzz
# for WeasyPrint (the termo de titularidade).
system_pkgs=(redis-server fonts-dejavu-core libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0
             postgresql-client)
if [ $want_test = 1 ]; then
  # poppler-utils: pdfsig/pdftoppm check and render the termo; libnss3-tools: certutil makes the
  # NSS database pdfsig trusts the built-in root from.
  # caddy and coturn: the deploy files are validated with them, and TURN credentials are
  # checked against a real coturn (tests/test_deploy_files.py, tests/test_turn.py).
  system_pkgs+=(chromium fonts-liberation poppler-utils libnss3-tools caddy coturn)
fi
apt_install "${system_pkgs[@]}"

if [ ! -x .venv/bin/python ]; then
  say "creating virtualenv .venv"
  "$PY" -m venv .venv || { apt_install python3-venv && "$PY" -m venv .venv; }
fi

lock_hash=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat .venv/.installed 2>/dev/null)" != "$lock_hash" ]; then
  say "installing Python packages from requirements.lock"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
  echo "$lock_hash" > .venv/.installed
fi

.venv/bin/pybabel compile -d app/translations >/dev/null
