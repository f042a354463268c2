"""The scale benchmark (bench/scale.py) at a tiny size, for real.

Four federations one after the other (THA on one nats-server, THA as a
three-node cluster, THA's hub with two ingress workers, THA's hub as an active
process and a standby), each running a small
end-to-end level and one backlog drain of THA's hub. Performance is not
asserted, only that every alert arrived in every configuration, that the hub
drained the whole backlog, and that every ratio the table prints is there.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, cast

from bench import scale
from protocols.keys import KdfProfile

SIZES = scale.Sizes(
    levels=(4,),
    messages=20,
    send_seconds=10.0,
    drain_seconds=10.0,
    backlog=40,
    drain_rounds=1,
    passes=1,
    publish_samples=10,
)


async def test_every_configuration_delivers_and_drains_and_the_ratios_are_there(
    tmp_path: Path,
) -> None:
    got = await scale.measure(tmp_path, SIZES, kdf=KdfProfile.INTERACTIVE)
    runs = cast(dict[str, dict[str, Any]], got["runs"])
    assert list(runs) == ["single", "clustered", "workers2", "standby"]
    assert (runs["clustered"]["tha_nodes"], runs["workers2"]["workers"]) == (3, 2)
    for name, run in runs.items():
        (level,) = run["e2e"]
        assert level["senders"] == 4
        # each sender checks the count before its send: up to one more each than asked
        assert level["sent"] == level["received"], (name, level)
        assert SIZES.messages <= level["sent"] < SIZES.messages + 4, (name, level)
        assert level["send_errors"] == 0, (name, level)
        assert level["latency_p50_ms"] <= level["latency_p99_ms"]
        (drain,) = run["hub_drain_rounds"]
        assert drain["published"] == SIZES.backlog, (name, drain)
        assert drain["complete"], (name, drain)
        # every alert settled once: no more than the backlog and the receipts MYS sent back
        assert SIZES.backlog <= drain["settled"] <= 2 * SIZES.backlog, (name, drain)
        assert run["hub_drain_msgs_per_s"] == drain["msgs_per_s"]
        assert run["publish_ack"]["p50_ms"] <= run["publish_ack"]["p99_ms"], run
        assert drain["hub_cpu_cores"] is not None and drain["hub_cpu_cores"] >= 0, drain
        assert level["hub_cpu_cores"] is not None and level["hub_cpu_cores"] >= 0, level
    ratios = cast(dict[str, dict[str, Any]], got["ratios"])
    assert set(ratios) == {"clustered", "workers2", "standby"}
    for ratio in ratios.values():
        assert isinstance(ratio["publish_ack_p50_ms"], float), ratio
        assert set(ratio["e2e"]["4"]) == {"msgs_per_s", "latency_p50_ms", "latency_p99_ms"}
        assert all(isinstance(v, float) for v in ratio["e2e"]["4"].values()), ratio
    single = runs["single"]["e2e"][0]["msgs_per_s"]
    clustered = runs["clustered"]["e2e"][0]["msgs_per_s"]
    assert ratios["clustered"]["e2e"]["4"]["msgs_per_s"] == round(clustered / single, 3)
    out = io.StringIO()
    scale.print_table({"scale": got}, out)
    assert out.getvalue().count("\nclustered ") == 3  # its level, its drain, its publishes


def test_each_figure_is_the_best_of_the_passes_with_its_own_latencies() -> None:
    def level(senders: int, rate: float, p50: float) -> dict[str, object]:
        return {"senders": senders, "msgs_per_s": rate, "latency_p50_ms": p50}

    def drain(rate: float) -> dict[str, object]:
        return {"msgs_per_s": rate, "hub_cpu_cores": rate / 1000}

    passes = [
        {
            "e2e": [level(16, 300.0, 5.0), level(64, 200.0, 9.0)],
            "hub_drain_rounds": [drain(500)],
            "publish_ack": {"p50_ms": 2.0, "p99_ms": 3.0},
        },
        {
            "e2e": [level(16, 250.0, 4.0), level(64, 280.0, 7.0)],
            "hub_drain_rounds": [drain(600)],
            "publish_ack": {"p50_ms": 1.5, "p99_ms": 9.0},
        },
    ]
    got = scale.best_of(scale.Config("workers2", workers=2), passes)
    assert got["e2e"] == [level(16, 300.0, 5.0), level(64, 280.0, 7.0)]
    assert got["e2e_msgs_per_s_by_pass"] == [{"16": 300.0, "64": 200.0}, {"16": 250.0, "64": 280.0}]
    assert got["hub_drain_msgs_per_s"] == 600
    assert got["hub_drain_cpu"]["hub_cpu_cores"] == 0.6
    assert (got["tha_nodes"], got["workers"]) == (1, 2)
    assert got["publish_ack"] == {"p50_ms": 1.5, "p99_ms": 9.0}  # the pass of the lower p50


def test_the_ratios_divide_by_the_single_server_run_and_say_when_they_cannot() -> None:
    def run(rate: float, drain: float, p50: float | None) -> dict[str, object]:
        level = {"senders": 16, "msgs_per_s": rate, "latency_p50_ms": p50, "latency_p99_ms": 8.0}
        return {"e2e": [level], "hub_drain_msgs_per_s": drain}

    runs = {"single": run(400.0, 1000.0, 4.0), "clustered": run(100.0, 0.0, None)}
    got = scale.ratios(runs, "clustered")
    assert got["e2e"] == {"16": {"msgs_per_s": 0.25, "latency_p50_ms": None, "latency_p99_ms": 1.0}}
    assert got["hub_drain_msgs_per_s"] is None  # nothing drained is no ratio, not 0
