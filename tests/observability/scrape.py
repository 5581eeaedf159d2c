"""Read /metrics the way Prometheus does, into {(name, labels): value}."""

from __future__ import annotations

from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class _Getter(Protocol):
    def get(self, url: str) -> object: ...


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """0 for a sample not there yet (a counter that has not moved)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
