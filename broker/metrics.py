"""The hub's Prometheus metrics, kept by ``prometheus_client``.

In: the hub's calls, ``inc(name, amount, **labels)``, ``set(name, value,
**labels)`` and ``observe_latency(seconds)``, with the names and label names
of :data:`METRICS`. Out: :meth:`Metrics.render`, the text exposition format
served at ``/metrics``; :meth:`Metrics.counter_value` and
:meth:`Metrics.series` for tests.
Guaranteed: every :class:`Metrics` has its own ``CollectorRegistry``, so
several hubs in one process never share a series; the names and labels on
``/metrics`` are those of :data:`METRICS` (prometheus_client adds a
``<name>_created`` series beside each counter and histogram). A metric
appears on ``/metrics`` once first incremented or set. A name missing from
:data:`METRICS` is still kept, with the labels of its first use;
``tests/test_metrics.py`` checks that the hub uses none.

Several worker processes of one hub: set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty directory, the same for every worker, *before* any of them starts (and
so before ``prometheus_client`` is imported: it picks its value store at
import). Every worker then writes its series to that directory, and any
worker's ``/metrics`` shows all of them merged: counters and the latency
histogram summed, ``ixb_in_flight`` summed over live workers, the other
gauges as the most recent value any live worker set (each gauge's
``mode``). Empty the directory when the hub starts; call
``prometheus_client.multiprocess.mark_process_dead(pid)`` when a worker
exits. ``_created`` series are not kept in that mode, and the directory
must not be shared by two hubs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["LATENCY", "LATENCY_BUCKETS_S", "METRICS", "Metrics", "Spec"]

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LATENCY: Final = "ixb_hub_latency_seconds"

GaugeMode = Literal["livesum", "livemostrecent"]


@dataclass(frozen=True)
class Spec:
    """One metric the hub keeps: its kind, what it counts, its label names."""

    kind: Literal["counter", "gauge"]
    help: str
    labels: tuple[str, ...] = ()
    mode: GaugeMode = "livemostrecent"  # how a gauge merges across worker processes


METRICS: Final[Mapping[str, Spec]] = {
    "ixb_messages_total": Spec(
        "counter", "Messages decided, by decision (accepted, rejected, duplicate).", ("decision",)
    ),
    "ixb_rejected_total": Spec("counter", "Messages rejected, by error code.", ("code",)),
    "ixb_receipts_total": Spec("counter", "Messages covered by receipts sent.", ("status",)),
    "ixb_batches_total": Spec("counter", "Fetched batches settled."),
    "ixb_batch_messages_total": Spec("counter", "Messages in the batches settled."),
    "ixb_batch_seconds_total": Spec(
        "counter",
        "Seconds spent settling batches, by stage"
        " (decide_plan_seal, publish_wait, durable_commit, audit_copy).",
        ("stage",),
    ),
    "ixb_witness_alarms_total": Spec(
        "counter", "Tampering alarms raised, by the log's origin.", ("origin",)
    ),
    "ixb_witness_refused_total": Spec(
        "counter", "Peer checkpoints refused for witnessing.", ("code", "origin")
    ),
    "ixb_witness_alarm_repeats_total": Spec(
        "counter",
        "Forks shown again against a checkpoint an alarm already stands against (not re-raised).",
        ("origin",),
    ),
    "ixb_witness_conflicts_total": Spec(
        "counter",
        "Peer publications answered with our witnessed size (they proved from another).",
        ("origin",),
    ),
    "ixb_witness_holds_other_log_total": Spec(
        "counter",
        "Witness size answers naming a checkpoint of ours our log does not hold.",
        ("witness",),
    ),
    "ixb_federation_offers_total": Spec(
        "counter",
        "Newer federation versions peers sent, by result (newer: verified, not installed;"
        " refused: did not verify against the version held).",
        ("peer", "result"),
    ),
    "ixb_federation_version": Spec("gauge", "Federation version in use (its trust anchors)."),
    "ixb_federation_install_refused_total": Spec(
        "counter",
        "Federation files found in trust_dir that do not follow the version in use.",
        ("code",),
    ),
    "ixb_directory_rejected_total": Spec("counter", "Peer directories refused.", ("code", "peer")),
    "ixb_key_updates_total": Spec(
        "counter", "Agencies' encryption-key updates, by result or refusal code.", ("result",)
    ),
    "ixb_in_flight": Spec("gauge", "Messages being settled now.", mode="livesum"),
    "ixb_lookups_total": Spec(
        "counter",
        "Lookups on the synchronous path, by where they came from (agency, link) and outcome"
        " (answered, queued, rejected, busy).",
        ("source", "outcome"),
    ),
    "ixb_lookup_commits_total": Spec(
        "counter", "Group commits of lookup audit entries (many lookups per fsync)."
    ),
    "ixb_lookup_committed_entries_total": Spec(
        "counter", "Audit entries of lookups committed in group commits."
    ),
    "ixb_lookup_limit": Spec(
        "gauge",
        "Lookups this hub takes at once now (the adaptive limit under [lookup] max_in_flight).",
    ),
    "ixb_backlog": Spec("gauge", "Messages waiting in a peer's inbound stream.", ("source",)),
    "ixb_backlog_out": Spec(
        "gauge", "Messages waiting in our outbound stream to a peer.", ("destination",)
    ),
    "ixb_link_up": Spec("gauge", "1 while the link to a peer is connected.", ("peer",)),
    "ixb_directory_version": Spec(
        "gauge", "Version of the directory installed, by country.", ("country",)
    ),
    "ixb_checkpoint_size": Spec("gauge", "Size of our latest signed checkpoint."),
    "ixb_audit_shipped_size": Spec(
        "gauge",
        "Audit leaves copied into the country's AUDIT stream (checkpoints sign no further).",
    ),
    "ixb_hub_active": Spec(
        "gauge",
        "1 on the country's active hub process, 0 on one standing by (several processes).",
    ),
    "ixb_cosigned_size": Spec(
        "gauge", "Size of our latest checkpoint a witness cosigned.", ("witness",)
    ),
    "ixb_storage_failing": Spec(
        "gauge", "1 while a write of the hub's state files (store, audit log) is failing."
    ),
    "ixb_storage_failures_total": Spec(
        "counter",
        "Failed writes of the hub's state files, by writer (each retried, nothing acked).",
        ("writer",),
    ),
}


class Metrics:
    """One hub's metrics in one registry of its own."""

    def __init__(self, *, multiprocess_dir: str | os.PathLike[str] | None = None) -> None:
        self.registry = CollectorRegistry()
        if multiprocess_dir is None:
            multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.multiprocess_dir = multiprocess_dir
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._registering = threading.Lock()
        self._latency = Histogram(
            LATENCY,
            "Time from ingress to routed, per message.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def _spec(
        self, name: str, kind: Literal["counter", "gauge"], labels: Mapping[str, str]
    ) -> Spec:
        spec = METRICS.get(name)
        if spec is None or spec.kind != kind:
            return Spec(kind, f"{name} (not in broker.metrics.METRICS)", tuple(sorted(labels)))
        return spec

    def _counter(self, name: str, labels: Mapping[str, str]) -> Counter:
        c = self._counters.get(name)
        if c is None:
            spec = self._spec(name, "counter", labels)
            with self._registering:
                c = self._counters.get(name)
                if c is None:
                    c = Counter(name, spec.help, spec.labels, registry=self.registry)
                    self._counters[name] = c
        return c.labels(**labels) if labels else c

    def _gauge(self, name: str, labels: Mapping[str, str]) -> Gauge:
        g = self._gauges.get(name)
        if g is None:
            spec = self._spec(name, "gauge", labels)
            with self._registering:
                g = self._gauges.get(name)
                if g is None:
                    g = Gauge(
                        name,
                        spec.help,
                        spec.labels,
                        registry=self.registry,
                        multiprocess_mode=spec.mode,
                    )
                    self._gauges[name] = g
        return g.labels(**labels) if labels else g

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._counter(name, labels).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._gauge(name, labels).set(value)

    def observe_latency(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def counter_value(self, name: str, **labels: str) -> float:
        """This process's count of one series; 0 for a series never incremented."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def series(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every series of one counter or gauge in this process: sorted labels → value."""
        return {
            tuple(sorted(sample.labels.items())): sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == name
        }

    def render(self) -> str:
        """The text exposition format; every worker's series merged in multiprocess mode."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry).decode("utf-8")
        merged = CollectorRegistry()
        # registers itself in ``merged``; prometheus_client leaves it unannotated
        MultiProcessCollector(merged, path=os.fspath(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(merged).decode("utf-8")
