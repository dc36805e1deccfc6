"""Makes sure the services the tests use are up, and prints `export` lines for the shell.

`./test.sh` runs `eval "$(python -m tests.services)"`. Redis: TEST_REDIS_URL, or the one on
127.0.0.1:6379, or a private redis-server started here. PostgreSQL: TEST_POSTGRES_URL, or the
local server (started with pg_ctlcluster if it is installed but stopped). Anything missing
ends the run with a clear message: the suite never skips a database.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse


def err(msg):
    print(f"[videoar tests] {msg}", file=sys.stderr)


def reachable(host, port, timeout=1.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_redis() -> str:
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    u = urlparse(url)
    if reachable(u.hostname or "127.0.0.1", u.port or 6379):
        return url
    server = shutil.which("redis-server")
    if not server:
        sys.exit("[videoar tests] no Redis at %s and redis-server is not installed" % url)
    port = free_port()
    data = tempfile.mkdtemp(prefix="videoar-redis-")
    subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--dir", data, "--daemonize", "yes", "--logfile", f"{data}/redis.log"])
    for _ in range(100):
        if reachable("127.0.0.1", port):
            err(f"started a private redis-server on port {port}")
            return f"redis://127.0.0.1:{port}/15"
        time.sleep(0.1)
    sys.exit("[videoar tests] could not start redis-server")


def ensure_postgres() -> str:
    url = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    u = urlparse(url.replace("+psycopg", ""))
    host, port = u.hostname or "127.0.0.1", u.port or 5432
    if not reachable(host, port) and host in ("127.0.0.1", "localhost"):
        clusters = sorted(Path("/etc/postgresql").glob("*/main")) if Path("/etc/postgresql").exists() else []
        if clusters and shutil.which("pg_ctlcluster"):
            version = clusters[-1].parent.name
            err(f"starting PostgreSQL {version}")
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                           check=False)
            for _ in range(50):
                if reachable(host, port):
                    break
                time.sleep(0.2)
    if not reachable(host, port):
        sys.exit(f"[videoar tests] PostgreSQL is not reachable at {host}:{port}. Start it, or "
                 "point TEST_POSTGRES_URL at a database the tests may empty.")
    return url


def main():
    redis_url = ensure_redis()
    pg_url = ensure_postgres()
    print(f"export TEST_REDIS_URL='{redis_url}'")
    print(f"export TEST_POSTGRES_URL='{pg_url}'")


if __name__ == "__main__":
    main()
