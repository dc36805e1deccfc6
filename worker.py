"""The worker process: an RQ worker (with RQ's scheduler, which runs retries and delayed jobs)
and, in a child process, RQ's cron scheduler for the periodic jobs. Each job gets its own app
context (`app.jobs.job_context`). See docs/email-and-jobs.md.

    python worker.py            # one worker on the "email" and "default" queues + cron
    python worker.py --no-cron  # every further worker: no second cron scheduler
"""
import argparse
import logging
import multiprocessing
import os
import signal
import sys
import time

from rq import Queue, Worker

from app import create_app
from app.jobs import record_interruption, redis_connection, set_app

log = logging.getLogger("videoar.worker")


def periodic_jobs(cfg) -> list[tuple]:
    """The periodic jobs: (dotted path, seconds between runs[, job timeout]); an interval of 0
    turns a job off (BACKUP_SECONDS=0: no scheduled backups)."""
    jobs = [
        ("app.jobs.email.sweep_unsent_emails", cfg["EMAIL_SWEEP_SECONDS"]),
        ("app.jobs.sms.sweep_unsent_sms", cfg["SMS_SWEEP_SECONDS"]),
        ("app.jobs.maintenance.remind_and_expire", cfg["REMIND_AND_EXPIRE_SECONDS"]),
        ("app.jobs.conference.mark_no_shows", cfg["CONFERENCE_NO_SHOW_SECONDS"]),
        ("app.jobs.recording.sweep_unprocessed_recordings", cfg["RECORDING_SWEEP_SECONDS"]),
        ("app.jobs.retention.run_retention", cfg["RETENTION_SECONDS"]),
        # (path, interval, job timeout): a backup of a real storage takes longer than RQ's 180 s.
        ("app.jobs.backup.scheduled_backup", cfg["BACKUP_SECONDS"], cfg["BACKUP_TIMEOUT"]),
    ]
    return [job for job in jobs if job[1] > 0]


def run_cron(redis_url: str, periodic: list[tuple], parent_pid: int):
    """Body of the cron child: RQ's CronScheduler, restarted when Redis goes away (RQ's own
    loop ends on the first connection error) and stopped when the worker is gone."""
    import redis
    from rq.cron import CronScheduler
    from rq.exceptions import StopRequested

    from app.logging_setup import configure_logging

    configure_logging()  # LOG_FORMAT: text, or one JSON object a line
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us with SIGTERM

    class WorkerBoundCron(CronScheduler):
        def enqueue_jobs(self):
            # A worker killed outright leaves us orphaned: stop rather than run a second
            # cron next to the one its replacement starts.
            if os.getppid() != parent_pid:
                self.log.warning("cron: worker %s is gone; stopping", parent_pid)
                raise StopRequested()
            return super().enqueue_jobs()

    delay = 1.0
    while True:
        cron = WorkerBoundCron(connection=redis_connection(redis_url), logging_level="INFO")
        for func, interval, *timeout in periodic:
            module, _, name = func.rpartition(".")
            cron.register(getattr(__import__(module, fromlist=[name]), name),
                          queue_name="default", interval=interval,
                          job_timeout=timeout[0] if timeout else None)
        started = time.monotonic()
        try:
            cron.start()  # returns when asked to stop
            return
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            if time.monotonic() - started > 60:
                delay = 1.0
            log.warning("cron: Redis unreachable (%s); starting again in %.0f s", exc, delay)
        try:
            time.sleep(delay)
        except StopRequested:  # cron's own SIGTERM handler is still installed
            return
        delay = min(delay * 2, 30.0)


def _on_work_horse_killed(job, retpid, ret_val, rusage):
    signal_note = f" by signal {os.WTERMSIG(ret_val)}" if ret_val and os.WIFSIGNALED(ret_val) else ""
    record_interruption(job, f"work-horse terminated unexpectedly{signal_note}")


def _on_job_exception(job, exc_type, exc_value, traceback):
    from rq.exceptions import AbandonedJobError

    if exc_type is not None and issubclass(exc_type, AbandonedJobError):
        record_interruption(job, "abandoned: its worker stopped answering")
    return True  # let RQ's own handling go on


class VideoARWorker(Worker):
    """RQ's worker, remembering whether it was asked to stop (SIGTERM, Ctrl-C) or gave up."""

    stop_requested = False

    def request_stop(self, signum, frame):
        self.stop_requested = True
        super().request_stop(signum, frame)


def _wait_for_job_in_hand(worker):
    """RQ's worker may give up (Redis lost while it watched a job) with its work-horse still
    running. Let that job finish before a new worker starts: RQ could otherwise find it
    abandoned and run it a second time alongside."""
    pid = worker.horse_pid
    if not pid:
        return
    log.warning("worker: waiting for work-horse %s to finish its job", pid)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-cron", action="store_true",
                        help="do not run the periodic jobs (every worker but one)")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--health", action="store_true",
                        help="exit 0 when a worker of this machine beats in Redis, 1 otherwise")
    args = parser.parse_args(argv)
    from app.services.status import WorkerHeartbeat, worker_health_exit_code

    if args.health:
        return worker_health_exit_code(create_app().config["REDIS_URL"])

    import redis

    app = create_app()
    set_app(app)
    cfg = app.config
    cron_process = None
    if not args.no_cron and not args.burst:
        cron_process = multiprocessing.get_context("spawn").Process(
            target=run_cron, args=(cfg["REDIS_URL"], periodic_jobs(cfg), os.getpid()),
            name="videoar-cron", daemon=True)
        cron_process.start()
    maintenance = cfg["RQ_MAINTENANCE_INTERVAL"]
    delay = 1.0
    heartbeat = WorkerHeartbeat(cfg["REDIS_URL"]).start()  # /healthz, `flask health worker`
    try:
        while True:
            connection = redis_connection(cfg["REDIS_URL"])
            queues = [Queue(name, connection=connection) for name in ("email", "default")]
            worker = VideoARWorker(
                queues, connection=connection,
                job_monitoring_interval=cfg["RQ_JOB_MONITORING_INTERVAL"],
                maintenance_interval=maintenance,
                # An idle worker blocks on the queues for worker_ttl - 15 s (RQ's default:
                # 405 s) and runs its maintenance (finding jobs whose worker died, restarting
                # its scheduler) only in between: wake it as often as that.
                worker_ttl=maintenance + 15,
                exception_handlers=[_on_job_exception],
                work_horse_killed_handler=_on_work_horse_killed)
            started = time.monotonic()
            try:
                worker.work(with_scheduler=True, burst=args.burst, logging_level="INFO")
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("worker: Redis unreachable (%s)", exc)
            _wait_for_job_in_hand(worker)
            if worker.stop_requested or args.burst:
                break
            # RQ's worker quits when Redis goes away in the middle of a job: start a new one
            # once it is back, rather than leave the queues without a worker.
            if time.monotonic() - started > 60:
                delay = 1.0
            log.warning("worker: stopped on an error; starting a new one in %.0f s", delay)
            signal.signal(signal.SIGTERM, _raise_stop)
            signal.signal(signal.SIGINT, _raise_stop)
            try:
                time.sleep(delay)
            except _Stop:
                break
            delay = min(delay * 2, 30.0)
    finally:
        heartbeat.stop()
        if cron_process is not None and cron_process.is_alive():
            cron_process.terminate()
            cron_process.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
