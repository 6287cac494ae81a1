"""Prometheus metrics, read from the database at scrape time.

The database is the single source of truth, so every API server of a fleet reports the same
figures and nothing depends on which process ran an item: no worker-side registry, no
prometheus_client multiprocess mode (its per-process files would have to be collected from
every worker machine). The cost is one grouped query per metric family at each scrape.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from imgq.domain.status import Status
from imgq.store.repository import Repository

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def operation_label(pipeline_json: str | None) -> str:
    """A pipeline's operations joined with '|' ("grayscale", "resize|encode"); parameters
    are left out, so that the label set stays small."""
    try:
        steps = json.loads(pipeline_json or "[]")
        return "|".join(str(s.get("op", "?")) for s in steps) or "none"
    except (ValueError, AttributeError):
        return "unknown"


class DatabaseCollector(Collector):
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def collect(self) -> Iterator[Metric]:
        by_status = self.repo.count_by_status()
        snapshot = self.repo.metrics_snapshot(BUCKETS)
        items = GaugeMetricFamily("imgq_items", "Items in the job store by state.",
                                  labels=["state"])
        for status in Status:
            items.add_metric([status.value], by_status.get(status.value, 0))
        yield items

        depth = GaugeMetricFamily(
            "imgq_queue_depth", "Queued items that are due now, by resource class (queue).",
            labels=["resource"])
        found = {str(r): int(n) for r, n in snapshot["queue_depth"]}
        for resource in sorted({"cpu", "gpu", *found}):
            depth.add_metric([resource], found.get(resource, 0))
        yield depth

        failed = GaugeMetricFamily("imgq_failed_items", "Failed items in the job store, by "
                                   "error code.", labels=["error_code"])
        for code, count in snapshot["failed"]:
            failed.add_metric([str(code or "unknown")], int(count))
        yield failed

        yield self._processing(snapshot["processing"])

    def _processing(self, rows: list[tuple[Any, ...]]) -> Metric:
        merged: dict[str, list[float]] = {}  # label -> [count, sum, bucket counts...]
        for pipeline, count, total, *buckets in rows:
            acc = merged.setdefault(operation_label(pipeline), [0.0] * (2 + len(BUCKETS)))
            for i, value in enumerate([count, total, *buckets]):
                acc[i] += float(value or 0)
        family = HistogramMetricFamily(
            "imgq_processing_seconds", "Seconds an item's pipeline took in a worker, by the "
            "pipeline's operations.", labels=["operation"])
        for label, (count, total, *buckets) in sorted(merged.items()):
            pairs = [(repr(b), v) for b, v in zip(BUCKETS, buckets)] + [("+Inf", count)]
            family.add_metric([label], pairs, sum_value=total)
        return family


def make_registry(repo: Repository) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(repo))
    return registry
