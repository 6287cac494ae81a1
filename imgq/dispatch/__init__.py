"""Dispatchers: how "look at item X" reaches a worker.

`embedded`: a pool of worker processes inside `imgq serve`. `celery`: Celery on Redis or
RabbitMQ (`celery_app` is the Celery application, `celery` the `imgq worker`/`beat` processes).
`nats`: NATS JetStream. `sweeper`: the sweeps that publish. Which one runs is chosen by
IMGQ_BROKER_URL in the composition root (`imgq.compose`); the broker libraries are imported only
when their URL is used.
"""

from __future__ import annotations

from imgq.dispatch.base import Dispatcher, broker_kind, queue_for, queue_names

__all__ = ["Dispatcher", "broker_kind", "queue_for", "queue_names"]
