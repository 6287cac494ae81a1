"""How a fleet's batch becomes broker messages: for CPU items one per worker process that should
take part, each naming its share of the items, not one message per item; for GPU items (AI
steps, seconds each) one an item, so that every GPU worker of the fleet may take part."""

from __future__ import annotations

from imgq.config import Settings
from imgq.dispatch.base import MESSAGE_ITEMS, messages_for

SETTINGS = Settings(workers=2, ai_measure_on_start=False)
CPU, GPU = SETTINGS.cpu_queue, SETTINGS.gpu_queue


def ids(count: int) -> list[str]:
    return [f"item-{n}" for n in range(count)]


def test_a_cpu_job_is_a_message_per_worker_process() -> None:
    messages = messages_for(SETTINGS, CPU, ids(10))
    assert len(messages) == 2
    assert sorted(sum(messages, [])) == sorted(ids(10))  # each item named once


def test_never_more_messages_than_items() -> None:
    assert messages_for(Settings(workers=8), CPU, ids(1)) == [["item-0"]]
    assert messages_for(SETTINGS, CPU, []) == []
    assert messages_for(SETTINGS, GPU, []) == []


def test_a_large_batch_names_at_most_message_items_a_message() -> None:
    messages = messages_for(SETTINGS, CPU, ids(205))
    assert len(messages) == 21
    assert max(len(m) for m in messages) <= MESSAGE_ITEMS
    assert sorted(sum(messages, [])) == sorted(ids(205))


def test_gpu_items_are_a_message_each_whatever_the_api_servers_cores() -> None:
    """The API cannot count a fleet's GPU workers: ten AI items on a fleet of ten GPU machines
    must reach all ten, not the API server's two cores' worth of workers."""
    messages = messages_for(SETTINGS, GPU, ids(10))
    assert sorted(messages) == sorted([[i] for i in ids(10)])
