"""`GET /metrics`: the engine's metrics (`Engine.metrics()`) in the Prometheus text format.

A collector of its own registry reads the engine's counts at each scrape, so the figures are
exactly those of `metrics()` (nothing is counted twice), and two apps in one process never
share a series.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

CONTENT_TYPE = CONTENT_TYPE_LATEST


class EngineCollector:
    """Counters and gauges of one engine, named `protect_*`."""

    def __init__(self, engine: Any):
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        metrics = self.engine.metrics()
        decisions = CounterMetricFamily("protect_decisions", "Decisions returned, by verdict.", labels=["decision"])
        decisions.add_metric(["approve"], metrics["approved"])
        decisions.add_metric(["deny"], metrics["denied"])
        yield decisions
        for key, text in (
            ("overridden", "Approvals that needed a regime override."),
            ("errors", "Denials for a failure of the engine or its environment."),
            ("invalid", "Denials of an invalid request."),
            ("audit_failures", "Decisions the audit trail could not record (each a deny)."),
        ):
            yield CounterMetricFamily(f"protect_{key}", text, value=metrics[key])
        denials = CounterMetricFamily(
            "protect_denials", "Denials per blocking protection (`error`: a fail-closed deny).", labels=["protection"]
        )
        for protection, count in metrics["denials_by_protection"].items():
            denials.add_metric([protection], count)
        yield denials
        latency = metrics["latency_ms"]
        quantiles = GaugeMetricFamily(
            "protect_decision_latency_ms",
            f"Nearest-rank percentiles of decision_time_ms over the last {latency['window']} decisions.",
            labels=["quantile"],
        )
        for quantile, key in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")):
            if latency[key] is not None:
                quantiles.add_metric([quantile], latency[key])
        yield quantiles
        policy = self.engine.compiled.ref
        info = InfoMetricFamily("protect_policy", "The policy in force.")
        info.add_metric([], {"name": policy.name, "version": policy.version, "sha256": policy.sha256})
        yield info


def exposition_registry(engine: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
