"""Document-check latency against offered load, as a PNG (only when matplotlib is installed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def doc_verify_latency(results: dict[str, object], out: Path) -> Path | None:
    sweep = results.get("doc_verify_sweep")
    if not isinstance(sweep, list) or not sweep or importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib  # noqa: PLC0415 - optional

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    offered = [float(r["offered_per_s"]) for r in sweep]
    fig, (lat, done) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99")):
        points = [(o, r[key]) for o, r in zip(offered, sweep, strict=True) if r[key] is not None]
        lat.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    lat.axhline(25, color="red", linestyle="--", linewidth=0.8, label="p99 target 25 ms")
    lat.axhline(5, color="orange", linestyle="--", linewidth=0.8, label="p50 target 5 ms")
    lat.set_xscale("log")
    lat.set_yscale("log")
    lat.set_xlabel("offered document checks / s (open loop)")
    lat.set_ylabel("latency from scheduled send, ms")
    lat.set_title("THA → MYS document check, two hubs")
    lat.legend(fontsize=8)
    sent = [float(r["achieved_sent_per_s"]) for r in sweep]
    completed = [
        float(r["completed"]) / float(r["send_window_s"]) if r["send_window_s"] else 0.0
        for r in sweep
    ]
    done.plot(offered, offered, linestyle=":", color="grey", label="offered")
    done.plot(offered, sent, marker="o", label="sent / s")
    done.plot(offered, completed, marker="o", label="answered (incl. 8 s drain) / send window")
    done.set_xscale("log")
    done.set_yscale("log")
    done.set_xlabel("offered document checks / s")
    done.set_ylabel("per second")
    done.set_title("what got through")
    done.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
