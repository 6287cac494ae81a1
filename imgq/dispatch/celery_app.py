"""The Celery application: the task a message names, its worker settings, the beat schedule.

A task carries item ids, and means "this queue has work": the worker runs the queue's due
items in fair order (see `imgq.worker.execute.drain`); the database says what to do. A batch is
published as a few such messages, one per worker process that should take part
(`imgq.dispatch.base.messages_for`), not one per item: each message costs the broker, Celery's
parent process and the child a fixed amount of work, however little the item. `acks_late` with
`reject_on_worker_lost` and a prefetch of 1 mean a worker that dies mid-item loses nothing:
the message goes back to the broker, and the item's lease lets the sweeper requeue it.

`imgq serve` publishes from a background thread: a request never waits on the broker, and a
publish that fails (the broker is down) is only logged, because the rows are committed and the
beat's outbox sweep publishes any queued item that no worker took.

For tools that want an app (`celery -A imgq.dispatch.celery_app flower`), `app` is built from
the environment on first use.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from celery import Celery, signals

from imgq.config import Settings, get_settings
from imgq.dispatch.base import Dispatcher, messages_for, queue_for, resource_of
from imgq.dispatch.pool import HARD_MARGIN
from imgq.dispatch.sweeper import FleetSweeper
from imgq.domain.models import Claim
from imgq.worker.context import allow_hard_stop
from imgq.worker.execute import DRAIN_SECONDS, drain_concurrently
from imgq.worker.hooks import Hooks, ItemHooks
from imgq.worker.runtime import Runtime, items_in_flight, lower_priority, tune_libvips

log = logging.getLogger(__name__)

RUN_ITEM = "imgq.run_item"
SWEEP_QUEUE = "imgq.sweep_queue"
SWEEP_EXPIRY = "imgq.sweep_expiry"

_lock = threading.Lock()
_state: dict[str, Any] = {}  # this process's Runtime, publisher and sweeper, made once


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
        """Start the API's publisher thread. The broker's client (kombu's transport and its
        driver: for Redis about 100 modules, 0.4 s of CPU) is loaded here, before the first
        request, without connecting: loaded by the first publish, in the publisher's thread,
        it took the interpreter from the event loop's status reads for that long."""
        try:
            with self.app.connection_for_write() as connection:
                connection.transport  # noqa: B018 - loads the transport's modules, connects nothing
        except Exception as exc:  # noqa: BLE001 - the first publish meets it, as before
            log.warning("could not load the broker's client (%s); the first publish will try "
                        "again", exc)
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
            for named in messages_for(self.settings, target, item_ids):
                self.app.send_task(RUN_ITEM, args=[named], queue=target, producer=producer,
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


def drain_limit(settings: Settings) -> float:
    """The longest one drain task may take: its budget, then one item to its time limit."""
    return DRAIN_SECONDS + settings.item_time_limit_seconds + settings.kill_grace_seconds


def make_celery(settings: Settings) -> Celery:
    app = Celery("imgq", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=settings.cpu_queue,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # No task events unless a monitor asks for them: each task would cost three more
        # broker messages (received, started, succeeded). Flower turns them on itself
        # (`enable_events`, a remote-control command it repeats every few seconds).
        worker_send_task_events=False,
        # A step that ignores the time limit is killed with its child process, which Celery
        # replaces (the item's own watchdog ends the child first: IMGQ_KILL_GRACE_SECONDS).
        task_soft_time_limit=drain_limit(settings),
        task_time_limit=drain_limit(settings) + HARD_MARGIN,
        worker_max_tasks_per_child=settings.worker_max_items or None,
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1000 or None,  # KiB
        beat_schedule={
            "imgq-sweep-queue": {
                "task": SWEEP_QUEUE, "schedule": settings.queue_sweep_interval_seconds,
                "options": {"queue": settings.sweep_queue,
                            "expires": settings.queue_sweep_interval_seconds},
            },
            "imgq-sweep-expiry": {
                "task": SWEEP_EXPIRY, "schedule": settings.sweep_interval_seconds,
                "options": {"queue": settings.sweep_queue, "expires": settings.sweep_interval_seconds},
            },
        },
    )
    app.imgq_settings = settings
    _register_tasks(app)
    return app


def _register_tasks(app: Celery) -> None:
    # shared=False: each app (one per process, or per test) keeps its own tasks, bound to its
    # own settings; a shared task would reach every app made later in the same process.
    @app.task(name=RUN_ITEM, bind=True, ignore_result=True, shared=False)
    def run_item(task: Any, item_ids: list[str] | str) -> int:
        """A message means "the queue has work": run its due items in fair order (the named
        items among them, or they were run already). When the drain stops with items still
        due (its time budget, a retry, the database down), the named items it did not end are
        published again, so that they keep a message."""
        named = [item_ids] if isinstance(item_ids, str) else item_ids  # an older API's message
        if all(item_id in _ended_here for item_id in named):  # a drain of this process ran
            return 0  # them: the message is spent
        settings: Settings = app.imgq_settings
        queue = (task.request.delivery_info or {}).get("routing_key") or settings.cpu_queue
        resource = resource_of(settings, queue)
        drained = drain_concurrently(_runtime(app), resource, items_in_flight(settings, resource))
        waiting = dict(drained.later)  # items that ran side by side and wait for a retry
        if drained.retry_item is not None and drained.retry_in is not None:
            waiting[drained.retry_item] = drained.retry_in
        for item, delay in waiting.items():
            _publisher(app).publish_to(queue, [item], delay)
        left = [i for i in named if i not in _ended_here and i not in waiting]
        if drained.more and left:  # after the database's back-off when it was down
            wait = drained.retry_in if drained.retry_item is None else None
            _publisher(app).publish_to(queue, left, wait or 0.0)
        return drained.items

    @app.task(name=SWEEP_QUEUE, ignore_result=True, shared=False)
    def sweep_queue() -> None:
        report = _sweeper(app).sweep_queue()
        log.debug("queue sweep: %d requeued, %d published", len(report.requeued),
                  report.dispatched)

    @app.task(name=SWEEP_EXPIRY, ignore_result=True, shared=False)
    def sweep_expiry() -> None:
        _sweeper(app).sweep_expiry()


class EndedHere(ItemHooks):
    """The items whose final end (succeeded, failed, cancelled) this process wrote, the latest
    `size`. Their messages, which arrive after a drain ran them, cost no claim: a final state
    never changes, and every other due item still has a message of its own."""

    FINAL = frozenset({"succeeded", "failed", "cancelled"})

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._ids: dict[str, None] = {}
        self._lock = threading.Lock()

    def ended(self, claim: Claim, outcome: str, note: str = "") -> None:
        if outcome in self.FINAL:
            with self._lock:
                self._ids[claim.item.id] = None
                if len(self._ids) > self.size:
                    del self._ids[next(iter(self._ids))]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._ids

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()


_ended_here = EndedHere()


def _runtime(app: Celery, item_worker: bool = False) -> Any:
    with _lock:
        if "runtime" not in _state:
            settings: Settings = app.imgq_settings
            tune_libvips(1)
            runtime = Runtime.from_settings(settings, item_worker=item_worker)
            runtime.hooks = Hooks(runtime.hooks, _ended_here)
            _state["runtime"] = runtime
        return _state["runtime"]


def _publisher(app: Celery) -> Any:
    with _lock:
        if "publisher" not in _state:
            _state["publisher"] = CeleryDispatcher(app.imgq_settings, app)
        return _state["publisher"]


def _sweeper(app: Celery) -> Any:
    runtime, publisher = _runtime(app), _publisher(app)
    with _lock:
        if "sweeper" not in _state:
            _state["sweeper"] = FleetSweeper(runtime, publisher)
        return _state["sweeper"]


@signals.worker_process_init.connect
def _build_runtime(**_: Any) -> None:
    """Each prefork child builds its Runtime once, after the fork (no shared connections)."""
    _state.clear()
    _ended_here.clear()
    allow_hard_stop()
    app = _state_app.get("app")
    if app is not None:
        lower_priority(app.imgq_settings.worker_nice)
        _runtime(app, item_worker=True)


_state_app: dict[str, Celery] = {}


def use_app(app: Celery) -> Celery:
    """Remember the app this process runs, so that the child processes build its Runtime."""
    _state_app["app"] = app
    return app


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):  # `celery -A imgq.dispatch.celery_app ...`
        if "app" not in _state_app:
            use_app(make_celery(get_settings()))
        return _state_app["app"]
    raise AttributeError(name)
