"""broker.metrics: the series /metrics shows, one registry per hub, and several workers.

The readers of /metrics in this repository are Prometheus-style text
matching (tests/test_federation.py) and the benchmarks' batch counters
(bench/common.py); both are run here against the real exposition.
"""

from __future__ import annotations

import ast
import asyncio
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

import broker
from bench.common import BATCH_SERIES, hub_batch_counters
from broker.metrics import LATENCY_BUCKETS_S, METRICS, Metrics


def _samples(text: str) -> dict[str, float]:
    """``name{labels}`` → value, for every sample line (comments skipped)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.mark.parametrize(
    ("call", "series", "value"),
    [
        (lambda m: m.inc("ixb_batches_total"), "ixb_batches_total", 1.0),
        (lambda m: m.inc("ixb_batch_messages_total", 64), "ixb_batch_messages_total", 64.0),
        (
            lambda m: m.inc("ixb_batch_seconds_total", 0.25, stage="publish_wait"),
            'ixb_batch_seconds_total{stage="publish_wait"}',
            0.25,
        ),
        (
            lambda m: m.inc("ixb_messages_total", decision="accepted"),
            'ixb_messages_total{decision="accepted"}',
            1.0,
        ),
        (
            lambda m: m.inc("ixb_rejected_total", code="ixb.E_UNAUTHORISED"),
            'ixb_rejected_total{code="ixb.E_UNAUTHORISED"}',
            1.0,
        ),
        (
            lambda m: m.inc("ixb_witness_refused_total", origin="MYS", code="ixb.E_FORK"),
            'ixb_witness_refused_total{code="ixb.E_FORK",origin="MYS"}',  # labels sorted
            1.0,
        ),
        (
            lambda m: m.inc("ixb_directory_rejected_total", peer="MMR", code="ixb.E_SIGNATURE"),
            'ixb_directory_rejected_total{code="ixb.E_SIGNATURE",peer="MMR"}',
            1.0,
        ),
        (
            lambda m: m.inc("ixb_receipts_total", 3, status="delivered"),
            'ixb_receipts_total{status="delivered"}',
            3.0,
        ),
        (
            lambda m: m.inc("ixb_witness_alarms_total", origin="THA"),
            'ixb_witness_alarms_total{origin="THA"}',
            1.0,
        ),
        (lambda m: m.set("ixb_in_flight", 7), "ixb_in_flight", 7.0),
        (lambda m: m.set("ixb_checkpoint_size", 118), "ixb_checkpoint_size", 118.0),
        (
            lambda m: m.set("ixb_cosigned_size", 117, witness="MYS"),
            'ixb_cosigned_size{witness="MYS"}',
            117.0,
        ),
        (lambda m: m.set("ixb_backlog", 0, source="MYS"), 'ixb_backlog{source="MYS"}', 0.0),
        (
            lambda m: m.set("ixb_backlog_out", 0, destination="MYS"),
            'ixb_backlog_out{destination="MYS"}',
            0.0,
        ),
        (lambda m: m.set("ixb_link_up", 1.0, peer="MYS"), 'ixb_link_up{peer="MYS"}', 1.0),
        (
            lambda m: m.set("ixb_directory_version", 4.0, country="THA"),
            'ixb_directory_version{country="THA"}',
            4.0,
        ),
        (
            lambda m: m.inc("ixb_rejected_total", code='a"b\\c'),
            'ixb_rejected_total{code="a\\"b\\\\c"}',  # label values escaped
            1.0,
        ),
    ],
)
def test_series_names_and_labels(call: object, series: str, value: float) -> None:
    m = Metrics()
    assert callable(call)
    call(m)
    text = m.render()
    assert _samples(text)[series] == value
    name = series.partition("{")[0]
    kind = "counter" if name.endswith("_total") else "gauge"
    assert f"# TYPE {name} {kind}" in text
    assert f"# HELP {name} {METRICS[name].help}" in text


def test_a_series_appears_once_used() -> None:
    m = Metrics()
    assert not any(s.startswith("ixb_checkpoint_size") for s in _samples(m.render()))
    m.set("ixb_checkpoint_size", 1)
    assert _samples(m.render())["ixb_checkpoint_size"] == 1.0


def test_counters_add_up_and_counter_value_reads_them() -> None:
    m = Metrics()
    assert m.counter_value("ixb_witness_alarms_total", origin="THA") == 0.0
    for _ in range(3):
        m.inc("ixb_witness_alarms_total", origin="THA")
    m.inc("ixb_witness_alarms_total", origin="MYS")
    m.inc("ixb_batch_seconds_total", 0.5, stage="durable_commit")
    m.inc("ixb_batch_seconds_total", 0.25, stage="durable_commit")
    assert m.counter_value("ixb_witness_alarms_total", origin="THA") == 3.0
    assert m.counter_value("ixb_witness_alarms_total", origin="MYS") == 1.0
    assert m.counter_value("ixb_witness_alarms_total", origin="MMR") == 0.0
    assert m.counter_value("ixb_batch_seconds_total", stage="durable_commit") == 0.75
    assert m.counter_value("ixb_batches_total") == 0.0


def test_series_lists_every_labelled_value_of_one_metric() -> None:
    m = Metrics()
    assert m.series("ixb_rejected_total") == {}
    m.inc("ixb_rejected_total", code="ixb.E_SIGNATURE")
    m.inc("ixb_rejected_total", 2, code="ixb.E_SCHEMA")
    m.set("ixb_link_up", 1, peer="MYS")
    m.set("ixb_in_flight", 3)
    assert m.series("ixb_rejected_total") == {
        (("code", "ixb.E_SIGNATURE"),): 1.0,
        (("code", "ixb.E_SCHEMA"),): 2.0,
    }
    assert m.series("ixb_link_up") == {(("peer", "MYS"),): 1.0}
    assert m.series("ixb_in_flight") == {(): 3.0}


def test_every_hub_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.inc("ixb_batches_total", 5)
    b.inc("ixb_batches_total")
    assert a.counter_value("ixb_batches_total") == 5.0
    assert b.counter_value("ixb_batches_total") == 1.0
    assert a.registry is not b.registry


def test_latency_histogram() -> None:
    m = Metrics()
    for s in (0.0005, 0.003, 0.003, 7.0):
        m.observe_latency(s)
    got = _samples(m.render())
    assert got['ixb_hub_latency_seconds_bucket{le="0.001"}'] == 1.0
    assert got['ixb_hub_latency_seconds_bucket{le="0.0025"}'] == 1.0
    assert got['ixb_hub_latency_seconds_bucket{le="0.005"}'] == 3.0
    assert got['ixb_hub_latency_seconds_bucket{le="5.0"}'] == 3.0
    assert got['ixb_hub_latency_seconds_bucket{le="+Inf"}'] == 4.0
    assert got["ixb_hub_latency_seconds_count"] == 4.0
    assert math.isclose(got["ixb_hub_latency_seconds_sum"], 7.0065)
    buckets = [k for k in got if k.startswith("ixb_hub_latency_seconds_bucket")]
    assert len(buckets) == len(LATENCY_BUCKETS_S) + 1


def test_the_histogram_is_shown_before_any_message() -> None:
    assert _samples(Metrics().render())["ixb_hub_latency_seconds_count"] == 0.0


def test_a_name_not_in_the_catalogue_is_still_kept() -> None:
    m = Metrics()
    m.inc("ixb_something_new_total", 2, kind="x")
    m.set("ixb_some_gauge", 3)
    got = _samples(m.render())
    assert got['ixb_something_new_total{kind="x"}'] == 2.0
    assert got["ixb_some_gauge"] == 3.0


def _names_metrics(node: ast.expr) -> bool:
    """``metrics`` or ``….metrics``: a Metrics, by the name every caller gives it."""
    return (isinstance(node, ast.Name) and node.id == "metrics") or (
        isinstance(node, ast.Attribute) and node.attr == "metrics"
    )


def _metric_calls() -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, name, label names) of every ``metrics.inc/set("ixb_…", …)`` in broker/."""
    calls = []
    for path in Path(broker.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("inc", "set")
                and _names_metrics(node.func.value)
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                labels = tuple(sorted(k.arg for k in node.keywords if k.arg))
                calls.append((node.func.attr, str(node.args[0].value), labels))
    return calls


def test_every_metric_the_hub_uses_is_declared_with_its_labels() -> None:
    calls = _metric_calls()
    assert len(calls) >= 15
    for method, name, labels in calls:
        spec = METRICS.get(name)
        assert spec is not None, f"{name} is not in broker.metrics.METRICS"
        assert spec.kind == ("counter" if method == "inc" else "gauge"), name
        assert tuple(sorted(spec.labels)) == labels, name
    assert {name for _, name, _ in calls} == set(METRICS)  # and nothing declared is unused


@dataclass
class _Hubs:
    """What hub_batch_counters reads of a deployment: its countries and their URLs."""

    urls: dict[str, str]

    @property
    def countries(self) -> list[str]:
        return list(self.urls)

    def hub_url(self, country: str) -> str:
        return self.urls[country]


async def test_the_benchmarks_read_the_batch_counters() -> None:
    m = Metrics()
    m.inc("ixb_batches_total", 4)
    m.inc("ixb_batch_messages_total", 256)
    m.inc("ixb_batch_seconds_total", 0.5, stage="decide_plan_seal")
    m.inc("ixb_batch_seconds_total", 1.5, stage="publish_wait")
    m.inc("ixb_batch_seconds_total", 0.25, stage="durable_commit")
    m.inc("ixb_batch_seconds_total", 0.125, stage="audit_copy")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=m.render(), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        hubs = _Hubs({"THA": f"http://127.0.0.1:{port}"})
        got = await asyncio.to_thread(hub_batch_counters, hubs)  # type: ignore[arg-type]
    finally:
        await runner.cleanup()
    assert set(BATCH_SERIES.values()) == set(got["THA"])
    assert got["THA"] == {
        "batches": 4.0,
        "messages": 256.0,
        "decide_s": 0.5,
        "publish_wait_s": 1.5,
        "commit_s": 0.25,
        "copy_s": 0.125,
    }


_WORKER = """
from broker.metrics import Metrics
m = Metrics()
m.inc("ixb_batches_total", {n})
m.inc("ixb_messages_total", {n}, decision="accepted")
m.set("ixb_in_flight", {n})
m.set("ixb_link_up", 1, peer="MYS")
m.observe_latency(0.003)
"""


def test_several_worker_processes_are_merged(tmp_path: Path) -> None:
    for n in (2, 5):
        subprocess.run(
            [sys.executable, "-c", _WORKER.format(n=n)],
            env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
            check=True,
            timeout=60,
        )
    assert len(list(tmp_path.glob("*.db"))) >= 2
    got = _samples(Metrics(multiprocess_dir=tmp_path).render())
    assert got["ixb_batches_total"] == 7.0
    assert got['ixb_messages_total{decision="accepted"}'] == 7.0
    assert got["ixb_in_flight"] == 7.0  # summed over the workers
    assert got['ixb_link_up{peer="MYS"}'] == 1.0  # the latest any worker set
    assert got["ixb_hub_latency_seconds_count"] == 2.0
