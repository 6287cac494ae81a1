"""The Dispatcher interface: how the API tells workers "look at item X"."""

from __future__ import annotations

from abc import ABC, abstractmethod
from urllib.parse import urlparse

from imgq.config import Settings, SettingsError

CELERY_SCHEMES = frozenset({"redis", "rediss", "amqp", "amqps", "pyamqp"})
NATS_SCHEMES = frozenset({"nats", "tls"})

#: The most items one broker message of a fleet names. A message means "the queue has work": the
#: worker process that takes it runs the queue's due items in fair order until none is due, so a
#: batch needs a message for each worker process that should take part, not one per item.
MESSAGE_ITEMS = 10


class Dispatcher(ABC):
    """A message only names an item; the database says what to do with it, so a duplicate
    or late message is harmless (the worker's claim is a guarded update)."""

    def start(self) -> None:
        """Start whatever the dispatcher runs (worker processes, connections)."""

    @abstractmethod
    def submit(self, item_ids: list[str], resource: str = "cpu", delay: float = 0.0) -> None:
        """Ask for the items to be run, after `delay` seconds."""

    def stop(self) -> None:
        """Stop; queued work stays in the database and is picked up at the next start."""

    def describe(self) -> dict[str, object]:
        return {"kind": type(self).__name__}


def messages_for(settings: Settings, queue: str, item_ids: list[str]) -> list[list[str]]:
    """The broker messages that ask a fleet for `item_ids` on `queue`, each naming its share of
    the items (a redelivered or leftover message names real work).

    CPU items: one message for each worker process that should take part (IMGQ_WORKERS as set
    on the API server), at most one per item, more where a batch has over MESSAGE_ITEMS items a
    message. GPU items (AI steps) take seconds each, so a message's cost is nothing beside them,
    while a fleet's GPU workers (which the API cannot count) should all take part: one message
    an item."""
    most = 1 if queue == settings.gpu_queue else MESSAGE_ITEMS
    count = min(len(item_ids), max(settings.worker_count, -(-len(item_ids) // most)))
    return [item_ids[i::count] for i in range(count)]


def broker_kind(settings: Settings) -> str:
    """embedded, celery or nats; a URL of another kind is a settings error."""
    if not settings.broker_url:
        return "embedded"
    scheme = urlparse(settings.broker_url).scheme
    if scheme in CELERY_SCHEMES:
        return "celery"
    if scheme in NATS_SCHEMES:
        return "nats"
    raise SettingsError(f"IMGQ_BROKER_URL: unsupported scheme {scheme!r}; use redis://, "
                        "amqp:// (Celery) or nats:// (NATS JetStream), or leave it empty")


def queue_for(settings: Settings, resource: str) -> str:
    return settings.gpu_queue if resource == "gpu" else settings.cpu_queue


def resource_of(settings: Settings, queue: str) -> str:
    """The resource class whose items a queue carries."""
    return "gpu" if queue == settings.gpu_queue else "cpu"


def queue_names(settings: Settings, names: str | None) -> list[str]:
    """`--queues cpu,gpu`: the resource names stand for the configured queue names."""
    wanted = [n.strip() for n in (names or "cpu,gpu").split(",") if n.strip()]
    alias = {"cpu": settings.cpu_queue, "gpu": settings.gpu_queue}
    return list(dict.fromkeys(alias.get(n, n) for n in wanted))
