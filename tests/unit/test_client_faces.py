"""The sync and async clients are two faces of one core: they offer the same calls, with the
same parameters, so neither can drift from the other."""

from __future__ import annotations

import inspect

from imgq.client import AsyncClient, Client, Requests

LIFECYCLE = {"close", "aclose"}


def _calls(cls: type) -> dict[str, list[str]]:
    return {name: list(inspect.signature(member).parameters)
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_") and name not in LIFECYCLE}


def test_both_clients_offer_the_same_calls_with_the_same_parameters() -> None:
    assert _calls(Client) == _calls(AsyncClient)


def test_every_call_of_the_core_is_offered_by_the_clients() -> None:
    offered = set(_calls(Client))
    core = {name for name in vars(Requests) if not name.startswith("_")}
    renamed = {"result": "download", "archive": "download_archive"}
    assert {renamed.get(name, name) for name in core} <= offered


def test_a_call_reads_the_answer_into_the_clients_types() -> None:
    call = Requests.get_many(["a", "b"])
    assert (call.method, call.path, call.params) == ("GET", "/v1/jobs", {"ids": "a,b"})
    job = {"id": "a", "status": "succeeded", "progress": 100, "expires_at": "x", "items": []}
    assert [j.id for j in call.read({"jobs": [job]})] == ["a"]
