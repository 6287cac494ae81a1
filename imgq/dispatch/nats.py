"""Dispatch through NATS JetStream (nats-py): a stream and a durable pull consumer per queue.

A message names item ids (comma-separated) and means "the queue has work"; the worker runs the
queue's due items in fair order. A batch is published as a few messages, one per worker process
that should take part (`imgq.dispatch.base.messages_for`). The worker acks the message after its
items have finished, sends in-progress acks while it runs, naks it with a delay for a retry, and
naks it at once when its drain stopped with items still due; a message whose worker died is
redelivered after the ack wait. The stream keeps messages until acked (work-queue retention),
so a restart of NATS with file storage loses nothing; the outbox sweep covers the rest.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from imgq.config import Settings, redact
from imgq.dispatch.base import Dispatcher, messages_for, queue_for, resource_of
from imgq.dispatch.pool import WorkerPool
from imgq.dispatch.sweeper import FleetSweeper
from imgq.worker.runtime import Runtime

log = logging.getLogger(__name__)

DURABLE = "imgq-workers"
STOP_SECONDS = 3  # at stop, how long published messages may take to reach the broker


def stream_name(queue: str) -> str:
    return "IMGQ_" + re.sub(r"[^A-Za-z0-9_-]", "_", queue).upper()


def subject(queue: str) -> str:
    return "imgq.items." + re.sub(r"[^A-Za-z0-9_-]", "_", queue)


async def ensure_queue(js: JetStreamContext, queue: str, ack_wait: float) -> None:
    """Create the queue's stream and durable consumer if missing (idempotent)."""
    name = stream_name(queue)
    try:
        await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(StreamConfig(name=name, subjects=[subject(queue)],
                                         retention=RetentionPolicy.WORK_QUEUE))
    try:
        await js.consumer_info(name, DURABLE)
    except NotFoundError:
        await js.add_consumer(name, ConsumerConfig(
            durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait,
            max_deliver=-1, max_ack_pending=-1, filter_subject=subject(queue)))


async def connect(settings: Settings) -> Client:
    return await nats.connect(settings.broker_url, max_reconnect_attempts=-1,
                              reconnect_time_wait=1, name="imgq")


class NatsDispatcher(Dispatcher):
    """Publishes from its own event loop thread; submit() never waits on the broker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: Client | None = None
        self._ready: set[str] = set()
        self._connecting: asyncio.Lock | None = None

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats-publisher",
                                        daemon=True)
        self._thread.start()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        self.start()
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        future.add_done_callback(_log_failure)
        return future

    def submit(self, item_ids: list[str], resource: str = "cpu", delay: float = 0.0) -> None:
        queue = queue_for(self.settings, resource)
        if delay > 0:  # JetStream has no delayed publish: hold it here (the outbox is the net)
            self._call(self._publish_later(delay, queue, item_ids))
            return
        self._call(self._publish(queue, item_ids))

    async def _publish_later(self, delay: float, queue: str, item_ids: list[str]) -> None:
        await asyncio.sleep(delay)
        await self._publish(queue, item_ids)

    async def _jetstream(self, queue: str) -> JetStreamContext:
        if self._connecting is None:  # made on the loop: one connection, however many callers
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._nc is None:
                self._nc = await connect(self.settings)
            js = self._nc.jetstream()
            if queue not in self._ready:
                await ensure_queue(js, queue, self.settings.nats_ack_wait_seconds)
                self._ready.add(queue)
        return js

    async def _publish(self, queue: str, item_ids: list[str]) -> None:
        js = await self._jetstream(queue)
        for named in messages_for(self.settings, queue, item_ids):
            await js.publish(subject(queue), ",".join(named).encode())

    @staticmethod
    async def _close(nc: Client) -> None:
        try:
            await nc.flush(timeout=STOP_SECONDS)
        finally:
            await nc.close()

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._nc is not None:  # what is still unpublished is in the outbox: stop promptly
            try:
                asyncio.run_coroutine_threadsafe(self._close(self._nc), self._loop).result(
                    STOP_SECONDS + 1)
            except Exception:
                log.warning("NATS connection did not close cleanly", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=STOP_SECONDS)
        self._loop.close()
        self._loop, self._thread, self._nc, self._connecting = None, None, None, None
        self._ready.clear()

    def describe(self) -> dict[str, object]:
        return {"kind": "nats", "queues": [self.settings.cpu_queue, self.settings.gpu_queue]}


def _log_failure(future: Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("NATS publish failed (%s); the beat's outbox sweep will publish the items",
                    future.exception())


# -- the worker -----------------------------------------------------------------------------
class NatsWorker:
    """Pulls one message per free process slot and runs the item in a process pool."""

    def __init__(self, settings: Settings, queues: list[str], concurrency: int) -> None:
        self.settings, self.queues, self.concurrency = settings, queues, concurrency
        self.stopping = asyncio.Event()
        self.slots = asyncio.Semaphore(concurrency)
        self.pool = WorkerPool(settings, concurrency, models=settings.gpu_queue in queues)
        self.running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        nc = await connect(self.settings)
        js = nc.jetstream()
        pullers = []
        for queue in self.queues:
            await ensure_queue(js, queue, self.settings.nats_ack_wait_seconds)
            sub = await js.pull_subscribe(subject(queue), durable=DURABLE,
                                          stream=stream_name(queue))
            pullers.append(asyncio.create_task(self._pull(sub, resource_of(self.settings, queue))))
        log.info("imgq worker (NATS) on %s, queues %s, %d processes",
                 redact(self.settings.broker_url), self.queues, self.concurrency)
        await self.stopping.wait()
        for puller in pullers:
            puller.cancel()
        await asyncio.gather(*pullers, return_exceptions=True)
        if self.running:  # finish what we hold, then ack it
            await asyncio.wait(self.running)
        try:
            await nc.flush()
            await nc.close()  # not drain(): the pull subscriptions' pending fetches never drain
        except (OSError, NatsError) as exc:  # lost as it closed (after a broker outage): what
            # it could not send is redelivered, and the pool is stopped all the same
            log.warning("the NATS connection was lost while it closed (%s)", type(exc).__name__)
        self.pool.stop(wait=self.settings.kill_grace_seconds + 2)

    async def _pull(self, sub: Any, resource: str) -> None:
        while not self.stopping.is_set():
            await self.slots.acquire()
            try:
                msgs = await sub.fetch(1, timeout=1.0)
            except (NatsTimeout, asyncio.TimeoutError):
                self.slots.release()
                continue
            except Exception:
                self.slots.release()
                log.warning("NATS fetch failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            task = asyncio.create_task(self._handle(msgs[0], resource))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def _handle(self, msg: Msg, resource: str) -> None:
        """A message means "the queue has work": run its due items in fair order. A drain
        that stops with items still due gives the message back at once, so that they keep it."""
        named = msg.data.decode()
        try:
            future = asyncio.wrap_future(self.pool.drain(resource))
            while True:  # keep the message ours while the item runs
                done, _ = await asyncio.wait({future}, timeout=self.settings.nats_ack_wait_seconds / 3)
                if done:
                    break
                await msg.in_progress()
            drained = future.result()
        except Exception:
            log.exception("items %s: unexpected error", named)
            return
        finally:
            self.slots.release()
        if drained.retry_in is not None:  # the message comes back to wake the retried item
            await msg.nak(delay=drained.retry_in)
        elif drained.more:
            await msg.nak()
        else:
            await msg.ack()


def run_worker(settings: Settings, queues: list[str], concurrency: int | None) -> None:
    asyncio.run(NatsWorker(settings, queues, concurrency or settings.worker_count).run())


def run_beat(settings: Settings) -> None:
    """The fleet sweeper on a plain timer (JetStream has no scheduler of its own)."""
    dispatcher = NatsDispatcher(settings)
    dispatcher.start()
    sweeper = FleetSweeper(Runtime.from_settings(settings, run_migrations=True), dispatcher)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("imgq beat (NATS): queue sweep every %.0f s, expiry every %.0f s",
             settings.queue_sweep_interval_seconds, settings.sweep_interval_seconds)
    last_expiry = float("-inf")
    while not stop.is_set():
        try:
            sweeper.sweep_queue()
            if time.monotonic() - last_expiry >= settings.sweep_interval_seconds:
                sweeper.sweep_expiry()
                last_expiry = time.monotonic()
        except Exception:
            log.exception("sweep failed; trying again")
        stop.wait(settings.queue_sweep_interval_seconds)
    dispatcher.stop()
