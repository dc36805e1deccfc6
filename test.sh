#!/usr/bin/env bash
# Sets up and runs the full test suite against real Redis, PostgreSQL, SMTP and Chromium.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh --test
eval "$(.venv/bin/python -m tests.services)"
exec .venv/bin/python -m pytest "$@"
