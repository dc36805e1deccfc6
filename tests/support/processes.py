"""Real outside parts for the tests: an SMTP server (aiosmtpd) and RQ worker processes.

    def test_x(app, smtp_server, worker):      # worker = a running `python worker.py`
        ...
        smtp_server.wait_for(1)
"""
import os
import signal
import socket
import subprocess
import sys
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=30.0, interval=0.1, message="condition"):
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class _Handler:
    def __init__(self, store):
        self.store = store

    async def handle_DATA(self, server, session, envelope):
        self.store.append(envelope)
        return "250 Message accepted for delivery"


class SMTPServer:
    """A real SMTP server on 127.0.0.1 that keeps every message it accepts. `stop()` and
    `start()` take it down and bring it back on the same port."""

    def __init__(self):
        self.port = free_port()
        self.envelopes = []
        self._controller = None

    def start(self):
        self._controller = Controller(_Handler(self.envelopes), hostname="127.0.0.1",
                                      port=self.port)
        self._controller.start()

    def stop(self):
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self):
        return [message_from_bytes(e.content, policy=policy.default) for e in self.envelopes]

    def wait_for(self, count, timeout=30.0):
        wait_until(lambda: len(self.envelopes) >= count, timeout,
                   message=f"{count} message(s) at the SMTP server")
        return self.messages


@pytest.fixture
def smtp_server():
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def process_env(app, database, tmp_path):
    """Environment for a process of the app (worker, media, web) sharing this test's
    database, Redis and secret."""
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database,
        "REDIS_URL": app.config["REDIS_URL"],
        "SECRET_KEY": app.config["SECRET_KEY"],
        "VIDEOAR_INSTANCE": str(app.config["INSTANCE_DIR"]),
        "PUBLIC_URL": app.config["PUBLIC_URL"],
        "RQ_JOB_MONITORING_INTERVAL": "5",
        "RQ_MAINTENANCE_INTERVAL": "10",
        "PYTHONUNBUFFERED": "1",
        "SMTP_HOST": "",
    })
    return env


class WorkerProcess:
    def __init__(self, env, log_path, args=()):
        self.env = env
        self.log_path = log_path
        self.args = list(args)
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "worker.py", *self.args], cwd=ROOT,
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def horse_pids(self):
        """PIDs of the work-horses (children) the worker has forked right now."""
        try:
            out = subprocess.run(["ps", "-o", "pid=,ppid=,args=", "--ppid", str(self.proc.pid)],
                                 capture_output=True, text=True).stdout
        except FileNotFoundError:
            return []
        return [int(line.split()[0]) for line in out.splitlines()
                if "worker.py" in line or "rq" in line]

    def kill(self, sig=signal.SIGKILL, whole_group=True):
        if self.proc and self.proc.poll() is None:
            if whole_group:
                os.killpg(self.proc.pid, sig)
            else:
                os.kill(self.proc.pid, sig)
            self.proc.wait(30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()

    def output(self):
        return Path(self.log_path).read_text(errors="replace")


@pytest.fixture
def start_worker(process_env, tmp_path):
    """Factory: start a real `python worker.py` (more than one if asked); all stopped at the
    end. Extra environment variables may be given."""
    workers = []

    def _start(args=(), **env):
        w = WorkerProcess({**process_env, **{k: str(v) for k, v in env.items()}},
                          tmp_path / f"worker{len(workers)}.log", args).start()
        workers.append(w)
        return w

    yield _start
    for w in workers:
        w.stop()


@pytest.fixture
def worker(start_worker, smtp_server):
    """One running worker that sends email to `smtp_server`."""
    return start_worker(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port)
