"""A few Prometheus metrics in the text exposition format, without a client library.

Counters with labels, gauges, and one latency histogram: all the hub needs.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels
    )
    return "{" + inner + "}"


@dataclass
class Metrics:
    counters: dict[str, dict[Labels, float]] = field(default_factory=lambda: defaultdict(dict))
    gauges: dict[str, dict[Labels, float]] = field(default_factory=lambda: defaultdict(dict))
    help: dict[str, str] = field(default_factory=dict)
    _hist_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    _hist_sum: float = 0.0

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self.counters[name]
        series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self.gauges[name][tuple(sorted(labels.items()))] = value

    def observe_latency(self, seconds: float) -> None:
        self._hist_counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self._hist_sum += seconds

    def counter_value(self, name: str, **labels: str) -> float:
        return self.counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        for kind, table in (("counter", self.counters), ("gauge", self.gauges)):
            for name in sorted(table):
                if name in self.help:
                    lines.append(f"# HELP {name} {self.help[name]}")
                lines.append(f"# TYPE {name} {kind}")
                for labels, value in sorted(table[name].items()):
                    lines.append(f"{name}{_fmt_labels(labels)} {value:g}")
        name = "ixb_hub_latency_seconds"
        lines.append(f"# HELP {name} Time from ingress to routed, per message.")
        lines.append(f"# TYPE {name} histogram")
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS_S, self._hist_counts, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound:g}"}} {cumulative}')
        cumulative += self._hist_counts[-1]
        lines.append(f'{name}_bucket{{le="+Inf"}} {cumulative}')
        lines.append(f"{name}_sum {self._hist_sum:g}")
        lines.append(f"{name}_count {cumulative}")
        return "\n".join(lines) + "\n"
