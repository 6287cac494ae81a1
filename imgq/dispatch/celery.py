"""Dispatch through Celery (Redis or RabbitMQ), and the `imgq worker` / `imgq beat` commands.

`imgq serve` publishes from a background thread: a request never waits on the broker, and a
publish that fails (the broker is down) is only logged, because the rows are committed and the
beat's outbox sweep publishes any queued item that no worker took.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import sys
import tempfile
import threading
import time

from celery import Celery, signals

from imgq.config import Settings
from imgq.dispatch import queue_for
from imgq.dispatch.base import Dispatcher
from imgq.dispatch.celery_app import RUN_ITEM, make_celery, use_app

log = logging.getLogger(__name__)

RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5,
                "interval_max": 2.0}
_STOP = None


class CeleryDispatcher(Dispatcher):
    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or make_celery(settings)
        self._pending: queue.Queue[tuple[str, list[str], float] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._publish_loop, name="celery-publisher",
                                        daemon=True)
        self._thread.start()

    def submit(self, item_ids: list[str], resource: str = "cpu", delay: float = 0.0) -> None:
        target = queue_for(self.settings, resource)
        if self._thread is not None:
            self._pending.put((target, list(item_ids), delay))
        else:  # in a worker or the beat: publish now
            self.publish_to(target, item_ids, delay)

    def publish_to(self, target: str, item_ids: list[str], delay: float = 0.0) -> None:
        with self.app.producer_or_acquire() as producer:
            for item_id in item_ids:
                self.app.send_task(RUN_ITEM, args=[item_id], queue=target, producer=producer,
                                   countdown=delay if delay > 0 else None, retry=True,
                                   retry_policy=RETRY_POLICY)

    def _publish_loop(self) -> None:
        while (work := self._pending.get()) is not _STOP:
            target, item_ids, delay = work
            try:
                self.publish_to(target, item_ids, delay)
            except Exception as exc:
                log.warning("could not publish %d items to %s (%s); the beat's outbox sweep "
                            "will publish them", len(item_ids), target, exc)

    def stop(self) -> None:
        if self._thread is not None:
            self._pending.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None

    def describe(self) -> dict[str, object]:
        return {"kind": "celery", "queues": [self.settings.cpu_queue, self.settings.gpu_queue],
                "pending": self._pending.qsize()}


def _node_name(role: str) -> str:
    return f"imgq-{role}-{os.getpid()}@{socket.gethostname()}"


def run_worker(settings: Settings, queues: list[str], concurrency: int | None,
               pool: str | None) -> None:
    app = use_app(make_celery(settings))
    argv = ["worker", "--queues", ",".join(queues), "--hostname", _node_name("worker"),
            "--concurrency", str(concurrency or settings.worker_count),
            "--pool", pool or "prefork", "--loglevel", settings.log_level,
            "--without-gossip", "--without-mingle"]
    log.info("imgq worker (Celery) on %s, queues %s", _safe(settings.broker_url), queues)
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
             _safe(settings.broker_url), settings.queue_sweep_interval, settings.sweep_interval)
    _run_supervised(app, argv, "beat")


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


def _safe(url: str) -> str:
    """The broker URL without its password, for logs."""
    head, at, tail = url.rpartition("@")
    return f"{head.split('://')[0]}://…@{tail}" if at else url
