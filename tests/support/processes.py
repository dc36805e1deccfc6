"""Real outside parts for the tests: an SMTP server (aiosmtpd), RQ worker processes and a
private Redis server.

    def test_x(app, smtp_server, worker):      # worker = a running `python worker.py`
        ...
        smtp_server.wait_for(1)
"""
import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
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


class Hold:
    """Holds SMTP conversations at one step until released, so a test can act while a
    client is in the middle of sending. Steps: "rcpt" (before the recipient is answered:
    nothing is accepted yet) and "data" (after the message is stored, before the server
    answers 250: the message is accepted but the client does not know it yet)."""

    def __init__(self, stage):
        assert stage in ("rcpt", "data")
        self.stage = stage
        self.released = threading.Event()
        self.arrivals = 0  # conversations that have reached the step

    def wait_reached(self, timeout=30.0, arrivals=1):
        wait_until(lambda: self.arrivals >= arrivals, timeout,
                   message=f"{arrivals} SMTP client(s) held at {self.stage}")

    def release(self):
        self.released.set()


class _Handler:
    def __init__(self, server):
        self.server = server

    async def _pause(self, stage):
        hold = self.server.current_hold
        if hold is None or hold.stage != stage or hold.released.is_set():
            return
        hold.arrivals += 1
        while not hold.released.is_set():
            await asyncio.sleep(0.02)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        await self._pause("rcpt")
        if self.server.rcpt_reply:
            return self.server.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.server.envelopes.append(envelope)
        await self._pause("data")
        return "250 Message accepted for delivery"

    async def handle_QUIT(self, server, session, envelope):
        return self.server.quit_reply or "221 Bye"


class SMTPServer:
    """A real SMTP server on 127.0.0.1 that keeps every message it accepts. `stop()` and
    `start()` take it down and bring it back on the same port; `hold(stage)` holds the next
    conversations at a step; `rcpt_reply` (e.g. "550 …") refuses recipients; `quit_reply`
    answers QUIT with something other than 221."""

    def __init__(self):
        self.port = free_port()
        self.envelopes = []
        self.current_hold = None
        self.rcpt_reply = None
        self.quit_reply = None
        self._controller = None

    def start(self):
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self):
        if self.current_hold is not None:
            self.current_hold.release()
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def hold(self, stage):
        self.current_hold = Hold(stage)
        return self.current_hold

    @property
    def messages(self):
        return [message_from_bytes(e.content, policy=policy.default) for e in self.envelopes]

    def wait_for(self, count, timeout=30.0):
        wait_until(lambda: len(self.envelopes) >= count, timeout,
                   message=f"{count} message(s) at the SMTP server")
        return self.messages


def fresh(db, model, key):
    """The row as another process (the worker) left it: drop what this session remembers."""
    db.session.rollback()
    db.session.expire_all()
    return db.session.get(model, key)


@contextmanager
def writing(db):
    """A test body that writes while a worker process writes too: take SQLite's write lock up
    front (BEGIN IMMEDIATE, as jobs do), so the two queue for it instead of one failing with
    "database is locked" on a read-then-write upgrade. Commits at the end."""
    from app.db_setup import sqlite_immediate

    db.session.rollback()
    token = sqlite_immediate.set(True)
    try:
        yield
        db.session.commit()
    finally:
        sqlite_immediate.reset(token)


def count_rows(db, model, **filters):
    """How many rows of `model` match, as committed by any process right now."""
    db.session.rollback()
    return db.session.query(model).filter_by(**filters).count()


def rq_job(app, job_id):
    """The RQ job `job_id` as Redis has it now."""
    from rq.job import Job

    from app.jobs import redis_connection

    return Job.fetch(job_id, connection=redis_connection(app.config["REDIS_URL"]))


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
        "KEYS_PASSPHRASE": app.config["KEYS_PASSPHRASE"],
        "VIDEOAR_INSTANCE": str(app.config["INSTANCE_DIR"]),
        "PUBLIC_URL": app.config["PUBLIC_URL"],
        "RQ_JOB_MONITORING_INTERVAL": "5",
        "RQ_MAINTENANCE_INTERVAL": "10",
        "PYTHONUNBUFFERED": "1",
        "SMTP_HOST": "",
        # No scheduled backup in the tests' workers (tests/test_backup.py runs its own).
        "BACKUP_SECONDS": "0",
    })
    return env


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers until its parent reaps it.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


class WorkerProcess:
    def __init__(self, env, log_path, args=()):
        self.env = env
        self.log_path = log_path
        self.args = list(args)
        self.proc = None
        self.orphans = []

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "worker.py", *self.args], cwd=ROOT,
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def _children(self):
        out = subprocess.run(["ps", "-o", "pid=,pgid=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return [tuple(int(x) for x in line.split()) for line in out.splitlines() if line.strip()]

    def horse_pids(self):
        """PIDs of the work-horses the worker has forked right now. RQ puts each horse in a
        process group of its own, which tells it from the scheduler and cron children."""
        return [pid for pid, pgid in self._children() if pid == pgid]

    def horse_pid(self, timeout=30.0):
        """The one work-horse running now (waits for it)."""
        [pid] = wait_until(self.horse_pids, timeout, message="a work-horse")
        return pid

    def kill_horse(self, sig=signal.SIGKILL):
        """Kill the running work-horse alone, as the OOM killer would; wait until it is gone."""
        pid = self.horse_pid()
        os.kill(pid, sig)
        wait_until(lambda: not pid_alive(pid), 30, message=f"work-horse {pid} gone")
        return pid

    def kill_all(self):
        """SIGKILL the worker (and its scheduler and cron children) first, then its
        work-horse, so that nothing is left to notice the horse's death."""
        horses = self.horse_pids()
        self.kill(signal.SIGKILL)
        for pid in horses:
            self.orphans.append(pid)
            os.kill(pid, signal.SIGKILL)
        for pid in horses:
            wait_until(lambda: not pid_alive(pid), 30, message=f"work-horse {pid} gone")
        return horses

    def kill(self, sig=signal.SIGKILL, whole_group=True):
        if self.proc and self.proc.poll() is None:
            if whole_group:
                os.killpg(self.proc.pid, sig)
            else:
                os.kill(self.proc.pid, sig)
            self.proc.wait(30)

    def terminate(self, timeout=20, whole_group=True):
        """Stop the worker the way its supervisor does: SIGTERM to its process group, or to
        the worker alone (which must then stop its children itself). Returns its exit status."""
        if self.proc.poll() is None:
            self.orphans.extend(self.horse_pids())
            if whole_group:
                os.killpg(self.proc.pid, signal.SIGTERM)
            else:
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.proc.poll()

    def stop(self):
        """End the worker and everything it started, quickly (SIGKILL): each test starts from
        an emptied database and Redis anyway. `terminate()` is the graceful way."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.orphans.extend(self.horse_pids())
        try:  # what is left of its process group, e.g. children of a worker killed alone
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        for pid in self.orphans:  # horses live in process groups of their own
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
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


class RedisServer:
    """A private `redis-server` on a free port (no persistence), that a test may stop and
    start again on the same port. Never the shared server of the other tests."""

    def __init__(self, directory: Path):
        self.port = free_port()
        self.directory = directory
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        self._log = open(self.directory / "redis.log", "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        from redis import Redis

        client = Redis.from_url(self.url, socket_connect_timeout=1)

        def answers():
            assert self.proc.poll() is None, "redis-server exited; see redis.log"
            try:
                return client.ping()
            except Exception:
                return False

        wait_until(answers, 15, message="the private redis-server")
        client.close()
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of this test's own, started."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
