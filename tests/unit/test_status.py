from __future__ import annotations

import pytest

from imgq.domain.status import (
    ALLOWED_FROM,
    JobStatus,
    Status,
    allowed_from,
    can_transition,
    derive_job_status,
)

S = Status


@pytest.mark.parametrize(
    ("source", "target"),
    [(S.queued, S.running), (S.running, S.succeeded), (S.running, S.failed),
     (S.running, S.queued), (S.queued, S.cancelled), (S.running, S.cancelled),
     (S.succeeded, S.expired), (S.failed, S.expired), (S.cancelled, S.expired),
     (S.queued, S.failed)],
)
def test_allowed_transitions(source: Status, target: Status) -> None:
    assert can_transition(source, target)


@pytest.mark.parametrize(
    ("source", "target"),
    [(S.queued, S.succeeded), (S.succeeded, S.running), (S.failed, S.queued),
     (S.cancelled, S.running), (S.expired, S.queued), (S.expired, S.succeeded),
     (S.succeeded, S.failed), (S.queued, S.expired), (S.running, S.expired)],
)
def test_refused_transitions(source: Status, target: Status) -> None:
    assert not can_transition(source, target)


def test_terminal_states_never_go_back_to_work() -> None:
    for terminal in (S.succeeded, S.failed, S.cancelled, S.expired):
        assert terminal not in allowed_from(S.running)
        assert terminal not in allowed_from(S.queued)


def test_every_state_has_a_rule() -> None:
    assert set(ALLOWED_FROM) == set(Status)


@pytest.mark.parametrize(
    ("items", "expected"),
    [([S.queued, S.queued], JobStatus.queued),
     ([S.queued, S.running], JobStatus.running),
     ([S.succeeded, S.queued], JobStatus.running),
     ([S.succeeded, S.succeeded], JobStatus.succeeded),
     ([S.succeeded, S.failed], JobStatus.partial),
     ([S.failed, S.failed], JobStatus.failed),
     ([S.cancelled, S.cancelled], JobStatus.cancelled),
     ([S.succeeded, S.cancelled], JobStatus.partial),
     ([S.failed, S.cancelled], JobStatus.failed),
     ([S.expired, S.expired], JobStatus.expired),
     ([], JobStatus.queued)],
)
def test_job_status_is_derived_from_items(items: list[Status], expected: JobStatus) -> None:
    assert derive_job_status(items) == expected
