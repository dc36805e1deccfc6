#!/usr/bin/env bash
# Sets up and runs the whole system: web, worker, media, the database migrated, an admin
# account printed. SQLite and a local Redis unless DATABASE_URL / REDIS_URL are set (.env).
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
exec .venv/bin/python -m app.launcher "$@"
