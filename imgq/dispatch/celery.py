"""The `imgq worker` and `imgq beat` processes of a Celery fleet (Redis or RabbitMQ)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
import time

from celery import Celery, signals

from imgq.config import Settings, redact
from imgq.dispatch.celery_app import make_celery, use_app

log = logging.getLogger(__name__)

#: Celery's own lines for every task ("received", "succeeded in"): imgq logs each item's end
#: itself, with its job and item ids, and a task is a wake-up, not an item.
_PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def _node_name(role: str) -> str:
    return f"imgq-{role}-{os.getpid()}@{socket.gethostname()}"


def run_worker(settings: Settings, queues: list[str], concurrency: int | None,
               pool: str | None) -> None:
    app = use_app(make_celery(settings))
    _quiet_per_task_lines(settings)
    argv = ["worker", "--queues", ",".join(queues), "--hostname", _node_name("worker"),
            "--concurrency", str(concurrency or settings.worker_count),
            "--pool", pool or "prefork", "--loglevel", settings.log_level,
            "--without-gossip", "--without-mingle"]
    log.info("imgq worker (Celery) on %s, queues %s", redact(settings.broker_url), queues)
    _run_supervised(app, argv, "worker")


def run_beat(settings: Settings) -> None:
    """Celery beat sends the sweep tasks to the sweep queue; this same process runs them in a
    solo pool, so that one sweeper remembers what it published (see FleetSweeper)."""
    app = use_app(make_celery(settings))
    schedule = os.path.join(tempfile.mkdtemp(prefix="imgq-beat-"), "schedule")
    argv = ["worker", "--beat", "--schedule", schedule, "--queues", settings.sweep_queue,
            "--hostname", _node_name("beat"), "--pool", "solo", "--concurrency", "1",
            "--loglevel", settings.log_level, "--without-gossip", "--without-mingle"]
    log.info("imgq beat (Celery) on %s: queue sweep every %.0f s, expiry every %.0f s",
             redact(settings.broker_url), settings.queue_sweep_interval_seconds,
             settings.sweep_interval_seconds)
    _run_supervised(app, argv, "beat")


def _quiet_per_task_lines(settings: Settings) -> None:
    """Celery's per-task INFO lines only at DEBUG (its failures are logged as before)."""
    if logging.getLevelName(settings.log_level.upper()) != logging.DEBUG:
        for name in _PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def _run_supervised(app: Celery, argv: list[str], role: str) -> None:
    """Run Celery's worker; when it stops without being asked to, start this command afresh.

    kombu's Redis transport can crash the worker while the broker restarts (an AttributeError
    in restore_unacked, celery/kombu#970 and kin); the worker then exits as if stopped. Nothing
    is lost (the database keeps the work, the beat republishes it), but the worker must come
    back, with no stale connection state: so the process image is replaced, same pid."""
    asked = threading.Event()

    def on_shutdown(**_: object) -> None:
        asked.set()

    signals.worker_shutting_down.connect(on_shutdown, weak=False)
    code: object = 0
    try:
        app.worker_main(argv)
    except SystemExit as exc:
        code = exc.code
    if asked.is_set():
        raise SystemExit(code)
    log.error("the Celery %s stopped by itself (exit %s); starting it again in 2 s", role, code)
    time.sleep(2)
    os.execv(sys.executable, [sys.executable, *sys.argv])

