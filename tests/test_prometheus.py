"""The sample monitoring in deploy/prometheus: promtool accepts it, every alert fires on the
series it is for (ixb-alerts.test.yml), and it names only metrics and labels hubs export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from broker.metrics import LATENCY, METRICS

HERE = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = HERE / "ixb-alerts.yml"
SCRAPE_LABELS = {"instance", "job", "country"}
"""Labels Prometheus adds (instance, job) or the sample scrape config sets (country)."""


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: `bash scripts/ensure-promtool` (make test)"
    return subprocess.run(
        [promtool, *args], cwd=HERE, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "ixb-alerts.yml"),
        ("test", "rules", "ixb-alerts.test.yml"),
    ],
    ids=" ".join,
)
def test_promtool_accepts_the_config_and_every_alert_fires_as_tested(args: tuple[str, ...]) -> None:
    done = _promtool(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.MULTILINE))
    tested = set(re.findall(r"alertname: (\w+)", (HERE / "ixb-alerts.test.yml").read_text()))
    assert alerts, "no alerts found"
    untested = alerts - tested - {"IxbHubDown", "IxbInboundBacklogGrowing"}
    assert not untested, f"alerts without a promtool test: {sorted(untested)}"
    # the two left out share their shape with a tested one (up == 0; a growing backlog)
    assert {"IxbHubDown", "IxbInboundBacklogGrowing"} <= alerts


def test_the_rules_name_only_what_a_hub_exports() -> None:
    text = RULES.read_text()
    names = set(re.findall(r"\bixb_[a-z_]+\b", text))
    known = {*METRICS, LATENCY}
    assert names, "no ixb metric in the rules"
    assert names <= known, f"not exported by any hub: {sorted(names - known)}"
    labels = {label for spec in METRICS.values() for label in spec.labels} | SCRAPE_LABELS
    used = set(re.findall(r"\$labels\.(\w+)", text))
    used |= set(re.findall(r"\bixb_[a-z_]+\{([a-z_]+)=", text))
    for group in re.findall(r"\bby \(([^)]*)\)", text):
        used |= {g.strip() for g in group.split(",")}
    assert used <= labels, f"labels no ixb metric carries: {sorted(used - labels)}"
