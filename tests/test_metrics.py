"""The request latency histogram reads, when scraped, as prometheus_client's own does."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from smsinbox.metrics import LoopHistogram

BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# On a bound (a bucket is "less than or equal"), between bounds, past the last, zero.
OBSERVED = [0.001, 0.0004, 0.003, 0.0025, 1.0, 7.5, 0.0, 0.26]


def exposition(registry: CollectorRegistry) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


def test_the_loop_histogram_exposes_what_prometheus_clients_histogram_does() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("latency_seconds", "Latency.", ["route", "status"], buckets=BOUNDS,
                          registry=theirs)  # fmt: skip
    loop = LoopHistogram("latency_seconds", "Latency.", ["route", "status"], BOUNDS)
    ours.register(loop)
    for index, value in enumerate(OBSERVED):
        labels = ("healthz", "200") if index % 3 else ("inbound_sms", "503")
        reference.labels(*labels).observe(value)
        loop.labels(*labels).observe(value)

    assert exposition(ours) == exposition(theirs)
    assert 'latency_seconds_bucket{le="0.001",route="healthz",status="200"} 1.0' in exposition(ours)
