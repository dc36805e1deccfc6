"""`./run.sh`: one command that runs the whole system on this machine.

Starts a private Redis when REDIS_URL is not set, migrates the database, seeds the first
admin, then runs and watches web (gunicorn), worker and media, restarting any that dies.
Ctrl-C stops them all.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from dotenv import load_dotenv

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def say(msg):
    print(f"\033[1m[videoar]\033[0m {msg}", flush=True)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def start_local_redis(instance: Path) -> subprocess.Popen:
    """A Redis of our own, persisted (append-only file) under instance/redis, so queued jobs
    survive a restart."""
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("redis-server not found: install it (Debian: apt-get install redis-server) "
                 "or set REDIS_URL.")
    data = instance / "redis"
    data.mkdir(parents=True, exist_ok=True)
    sock = data / "redis.sock"
    proc = subprocess.Popen(
        [server, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--dir", str(data), "--appendonly", "yes", "--appendfsync", "everysec",
         "--save", "", "--logfile", str(data / "redis.log")],
        start_new_session=True)
    for _ in range(100):
        if sock.exists():
            break
        time.sleep(0.05)
    os.environ["REDIS_URL"] = f"unix://{sock}?db=0"
    say(f"local Redis started ({sock})")
    return proc


def flask(*args) -> str:
    result = subprocess.run([str(VENV_BIN / "flask"), *args], check=True, cwd=ROOT,
                            env={**os.environ, "FLASK_APP": "wsgi.py"}, stdout=subprocess.PIPE,
                            text=True)
    return result.stdout


class Supervisor:
    def __init__(self):
        self.specs = {}
        self.procs = {}
        self.restarts = {}
        self.stopping = False

    def add(self, name, argv, env=None):
        self.specs[name] = (argv, env)
        self._start(name)

    def _start(self, name):
        argv, env = self.specs[name]
        self.procs[name] = subprocess.Popen(argv, cwd=ROOT, start_new_session=True,
                                            env={**os.environ, **(env or {})})

    def watch(self):
        while not self.stopping:
            for name, proc in list(self.procs.items()):
                code = proc.poll()
                if code is not None and not self.stopping:
                    n = self.restarts.get(name, 0) + 1
                    self.restarts[name] = n
                    delay = min(30, 2 ** min(n, 5))
                    say(f"{name} exited with {code}; restarting in {delay}s")
                    time.sleep(delay)
                    self._start(name)
            time.sleep(0.5)

    def stop(self, *_):
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.time() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main():
    os.chdir(ROOT)
    load_dotenv(ROOT / ".env")
    instance = Path(os.environ.get("VIDEOAR_INSTANCE", ROOT / "instance"))
    instance.mkdir(parents=True, exist_ok=True)
    port = int(os.environ.get("PORT", "5000"))
    host = os.environ.get("HOST", "127.0.0.1")
    os.environ.setdefault("PUBLIC_URL", f"http://localhost:{port}")
    if not port_free(port):
        sys.exit(f"port {port} is taken: stop what uses it or set PORT.")

    redis_proc = None
    if not os.environ.get("REDIS_URL"):
        redis_proc = start_local_redis(instance)

    say("migrating the database")
    flask("db", "upgrade")
    setup_output = flask("setup")
    if os.environ.get("CA_BACKEND", "builtin") == "builtin":
        flask("ca", "init")  # the built-in CA (homologação), once

    sup = Supervisor()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    py = str(VENV_BIN / "python")
    sup.add("web", [str(VENV_BIN / "gunicorn"), "--bind", f"{host}:{port}", "--worker-class",
                    "gthread", "--workers", os.environ.get("WEB_WORKERS", "2"), "--threads",
                    os.environ.get("WEB_THREADS", "24"), "--timeout", "120",
                    "--access-logfile", "-", "--logger-class",
                    "app.logging_setup.GunicornLogger", "wsgi:app"])
    sup.add("worker", [py, "worker.py"])
    # Media processes: each is one event loop (about one core at most) taking MEDIA_CAPACITY
    # calls; web places each new room on the least busy one (docs/media-design.md).
    health_port = int(os.environ.get("MEDIA_HEALTH_PORT", "5001"))
    for i in range(int(os.environ.get("MEDIA_PROCESSES", "1"))):
        sup.add(f"media-{i + 1}", [py, "-m", "app.media"],
                env={"MEDIA_HEALTH_PORT": str(health_port + i)})
    say(f"VideoAR is running: {os.environ['PUBLIC_URL']}  (staff login: "
        f"{os.environ['PUBLIC_URL']}/equipe/entrar). Ctrl-C stops everything.")
    for line in setup_output.splitlines():
        say(line)
    try:
        sup.watch()
    except KeyboardInterrupt:
        pass
    finally:
        say("stopping")
        sup.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
