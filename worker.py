"""The worker process: RQ workers (with RQ's scheduler for retries and delayed jobs) and the
cron scheduler for periodic jobs. Each job gets its own app context (`app.jobs.job_context`).

    python worker.py            # one worker on the "email" and "default" queues + cron
    python worker.py --no-cron  # another worker, without a second cron scheduler
"""
import argparse
import logging
import multiprocessing
import signal
import sys

from rq import Queue, Worker

from app import create_app
from app.jobs import redis_connection, set_app

log = logging.getLogger("videoar.worker")

# Periodic jobs: (dotted path, seconds between runs).
PERIODIC = [
    ("app.jobs.email.sweep_unsent_emails", 60),
    ("app.jobs.maintenance.remind_and_expire", 15 * 60),
]


def run_cron(redis_url: str):
    from rq.cron import CronScheduler

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us with SIGTERM
    connection = redis_connection(redis_url)
    cron = CronScheduler(connection=connection, logging_level="INFO")
    for func, interval in PERIODIC:
        module, _, name = func.rpartition(".")
        cron.register(getattr(__import__(module, fromlist=[name]), name), queue_name="default",
                      interval=interval)
    cron.start()


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-cron", action="store_true")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    args = parser.parse_args(argv)

    app = create_app()
    set_app(app)
    cfg = app.config
    connection = redis_connection(cfg["REDIS_URL"])
    cron_process = None
    if not args.no_cron and not args.burst:
        cron_process = multiprocessing.get_context("spawn").Process(
            target=run_cron, args=(cfg["REDIS_URL"],), name="videoar-cron", daemon=True)
        cron_process.start()
    queues = [Queue(name, connection=connection) for name in ("email", "default")]
    worker = Worker(queues, connection=connection,
                    job_monitoring_interval=cfg["RQ_JOB_MONITORING_INTERVAL"],
                    maintenance_interval=cfg["RQ_MAINTENANCE_INTERVAL"])
    try:
        worker.work(with_scheduler=True, burst=args.burst, logging_level="INFO")
    finally:
        if cron_process is not None and cron_process.is_alive():
            cron_process.terminate()
            cron_process.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
