"""The files ``ixb compose prepare`` writes, run as their containers would run them.

No docker engine runs here. Short of one, the prepared directory is run on
this machine in a private mount namespace (``unshare -m``; skipped where it
cannot be made) whose ``/etc/hosts`` maps the five service names to
loopback addresses of their own: each nats-server with its config, seeds,
TLS files and store where compose mounts them (the container paths
rewritten to this machine's, ``0.0.0.0`` to its address), the hubs (THA's
two processes with their services' environment from ``docker-compose.yml``)
and MYS's responder with ``/ixb`` rewritten and the passphrase read from the
prepared secret file. The service names stay: TLS checks them on every route, leaf
and client connection.

What it shows: THA's three nodes form their cluster and each dials MYS and
MMR; every server answers the compose healthcheck's ``/healthz``; the hubs
start and keep THA's streams on 3 replicas; of THA's two hub processes,
started together, one is active and the other stands by; a document check
crosses from THA to MYS's responder and back, still does with ``nats-tha-1``
killed, and again once the active THA hub is killed too (SIGKILL) and the
standby has taken over.

This file is also the driver that runs inside the namespace
(``python tests/test_compose_run.py DEPLOY NET``).
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NODES = {
    "nats-tha-1": "THA",
    "nats-tha-2": "THA-2",
    "nats-tha-3": "THA-3",
    "nats-mys": "MYS",
    "nats-mmr": "MMR",
}
"""Service → the node's name in the prepared files (``nats/<node>.conf``, ``data/<node>``)."""
HUBS = {"hub-tha-1": "THA", "hub-tha-2": "THA", "hub-mys": "MYS", "hub-mmr": "MMR"}
"""Hub service → its country (``hubs/<CC>.toml``)."""
PASSPHRASE = "compose run passphrase"


def _unshare() -> list[str] | None:
    """How to start a process in a private mount namespace here, if it can be done."""
    binary = shutil.which("unshare")
    if binary is None or not sys.platform.startswith("linux"):
        return None
    for argv in ([binary, "--mount"], [binary, "--user", "--map-root-user", "--mount"]):
        probe = [*argv, "sh", "-c", "mount --bind /etc/hosts /etc/hosts"]
        try:
            ran = subprocess.run(probe, capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if ran.returncode == 0:
            return argv
    return None


def test_prepared_files_run_as_the_containers_would(tmp_path: Path) -> None:
    unshare = _unshare()
    if unshare is None:
        pytest.skip("no private mount namespace here (unshare -m) for the service names")
    deploy = tmp_path / "deploy"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IXB_PASSPHRASE")}
    prepared = subprocess.run(
        [
            *(sys.executable, "-m", "ixb", "compose", "prepare"),
            *("--out", str(deploy / "compose")),
            *("--passphrase-file", str(deploy / "secrets" / "ixb-passphrase")),
        ],
        env={**env, "IXB_PASSPHRASE": PASSPHRASE},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert prepared.returncode == 0, prepared.stderr
    # 127.a.b.0/24 of its own: another run of this test at the same time binds elsewhere
    net = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}"
    ran = subprocess.run(
        [*unshare, sys.executable, __file__, str(deploy), net],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=ROOT,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    cluster = {"ixb-THA-1", "ixb-THA-2", "ixb-THA-3"}
    for index in (1, 2, 3):  # each node routes to the two others (server names)
        assert set(report["routes"][f"nats-tha-{index}"]) == cluster - {f"ixb-THA-{index}"}
    assert report["leafs"] == {
        "nats-tha-1": 2,
        "nats-tha-2": 2,
        "nats-tha-3": 2,
        "nats-mys": 4,
        "nats-mmr": 4,
    }
    assert report["replicas"] and set(report["replicas"].values()) == {3}, report
    assert {"IXB/INGRESS", "IXB/INBOX", "MYS_LINK/OUT_MYS", "MMR_LINK/IN_MMR"} <= set(
        report["replicas"]
    )
    assert sorted(report["roles"].values()) == ["active", "standby"], report
    assert report["roles"][report["killed"]] == "active", report
    assert report["takeover_s"] < 30, report  # the lease lapses 10 s after the kill
    assert report["checks"] == ["valid", "reported_stolen", "valid", "valid"], report
    # the responder's answers went to its own writable directory, not to /ixb
    state = deploy / "compose" / "agency-state" / "MYS-IMMIGRATION" / "MYS-IMMIGRATION.state"
    assert state.exists()


# --- the driver, inside the namespace -------------------------------------------------------


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _get(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our loopback
        return json.loads(response.read() or b"null")


def _until(what: str, probe: Any, limit: float = 60.0) -> Any:
    end = time.monotonic() + limit
    while True:
        try:
            found = probe()
        except (OSError, ValueError) as exc:
            found, last = None, exc
        else:
            last = None
        if found:
            return found
        if time.monotonic() > end:
            raise SystemExit(f"{what}: not within {limit} s ({last})")
        time.sleep(0.2)


class _Run:
    """The prepared deployment's processes, on this machine's loopback ``net``."""

    def __init__(self, deploy: Path, net: str) -> None:
        self.deploy = deploy
        self.out = deploy / "compose"
        self.addr = {service: f"{net}.{i}" for i, service in enumerate(NODES, start=2)}
        self.hub_addr = {service: f"{net}.{i}" for i, service in enumerate(HUBS, start=10)}
        self.hub_url: dict[str, str] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("IXB_PASSPHRASE")}
        self.env["IXB_PASSPHRASE_FILE"] = str(deploy / "secrets" / "ixb-passphrase")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, *argv: str, env: dict[str, str] | None = None) -> None:
        log = (self.deploy / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, **(env or {})},
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - the driver has one thread
        )

    def host_copy(self, path: Path, extra: dict[str, str], name: str = "run") -> Path:
        """``path`` as this machine sees the container's paths, beside it (0600)."""
        text = path.read_text().replace('"/ixb/', f'"{self.out}/')
        for old, new in extra.items():
            text = text.replace(old, new)
        copy = path.with_name(f"{name}-{path.name}")
        copy.write_text(text)
        copy.chmod(0o600)
        return copy

    def servers(self, nats_server: str) -> dict[str, Any]:
        for service, node in NODES.items():
            config = self.host_copy(
                self.out / "nats" / f"{node}.conf",
                {
                    "/etc/nats/tls": str(self.out / "tls"),
                    '"/data': f'"{self.out}/data/{node}',
                    "0.0.0.0:": f"{self.addr[service]}:",
                },
            )
            # beside the seeds/ it includes, as /etc/nats/nats.conf is beside /etc/nats/seeds
            config = config.rename(self.out / "nats" / node / "run.conf")
            self.spawn(service, nats_server, "-c", str(config))
        for service, a in self.addr.items():  # the compose healthcheck
            _until(service, lambda a=a: _get(f"http://{a}:8222/healthz"))
        routes = {
            s: sorted(r["remote_name"] for r in _get(f"http://{a}:8222/routez")["routes"])
            for s, a in self.addr.items()
            if s.startswith("nats-tha")
        }

        def leafs() -> dict[str, int] | None:
            counts = {
                s: len(_get(f"http://{a}:8222/leafz")["leafs"] or []) for s, a in self.addr.items()
            }
            return counts if sum(counts.values()) >= 14 else None

        return {"routes": routes, "leafs": _until("leaf links", leafs)}

    def hubs(self) -> dict[str, Any]:
        services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
        for service, country in HUBS.items():
            config = self.host_copy(
                self.out / "hubs" / f"{country}.toml",
                {'host = "0.0.0.0"': f'host = "{self.hub_addr[service]}"'},
                name=service,  # THA's two processes: one file each (its own address)
            )
            # the service's environment (THA's: instance, state, port), /ixb as here
            env = {
                k: str(v).replace("/ixb/", f"{self.out}/")
                for k, v in services[service].get("environment", {}).items()
                if k != "IXB_PASSPHRASE_FILE"
            }
            port = env.get("IXB_HUB__HTTP__PORT") or _toml_port(config)
            self.hub_url[service] = f"http://{self.hub_addr[service]}:{port}/healthz"
            self.spawn(
                service,
                *(sys.executable, "-m", "ixb", "hub", "run", "--config", str(config)),
                env=env,
            )
        for service, url in self.hub_url.items():  # the compose healthcheck: 200
            _until(service, lambda url=url: _get(url))
        roles = _until("THA's active hub and its standby", self.tha_roles)
        tha = self.addr["nats-tha-1"]
        jsz = _get(f"http://{tha}:8222/jsz?accounts=true&streams=true&config=true")
        replicas = {
            f"{account['name']}/{stream['name']}": stream["config"]["num_replicas"]
            for account in jsz.get("account_details", [])
            for stream in account.get("stream_detail", [])
        }
        return {"replicas": replicas, "roles": roles}

    def tha_roles(self) -> dict[str, str] | None:
        """THA's hub processes' roles, once one is active (and ready) and the other stands by."""
        health = {s: _get(self.hub_url[s]) for s, c in HUBS.items() if c == "THA"}
        roles = {s: str(h["role"]) for s, h in health.items()}
        if sorted(roles.values()) != ["active", "standby"]:
            return None
        ready = all(h["ready"] for h in health.values() if h["role"] == "active")
        return roles if ready else None

    def kill_active_hub(self) -> dict[str, Any]:
        """``docker compose kill hub-tha-N`` of the active one; the standby takes over."""
        roles = self.tha_roles()
        assert roles is not None, "no active THA hub with a standby"
        (killed,) = (s for s, role in roles.items() if role == "active")
        (other,) = (s for s in roles if s != killed)
        start = time.monotonic()
        self.procs[killed].kill()
        self.procs[killed].wait(10)

        def took_over() -> bool:
            health = _get(self.hub_url[other])
            return health["role"] == "active" and bool(health["ready"])

        _until(f"{other} active", took_over, limit=40)
        return {"killed": killed, "takeover_s": round(time.monotonic() - start, 1)}

    def document_checks(self, valid: list[str], stolen: list[str]) -> dict[str, Any]:
        responder = self.host_copy(self.out / "agencies" / "MYS-IMMIGRATION.toml", {})
        documents = str(self.out / "MYS-documents.json")
        self.spawn(
            "responder-mys",
            *(sys.executable, "-m", "ixb", "agency", "respond", "--profile", str(responder)),
            *("--documents", documents),
        )
        officer = str(self.host_copy(self.out / "agencies" / "THA-IMMIGRATION.toml", {}))

        def check(mrz: list[str]) -> str:
            ran = subprocess.run(
                [
                    *(sys.executable, "-m", "ixb", "verify-doc", "--mrz", *mrz),
                    *("--checkpoint", "SADAO", "--profile", officer, "--json"),
                ],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            return str(json.loads(ran.stdout).get("status")) if ran.returncode == 0 else ran.stderr

        # the responder is ready when it answers
        first = _until("an answer", lambda: check(valid) == "valid" and "valid")
        checks = [first, check(stolen)]
        self.procs["nats-tha-1"].kill()  # docker compose kill nats-tha-1
        self.procs["nats-tha-1"].wait(10)
        checks.append(check(valid))
        report = self.kill_active_hub()
        checks.append(check(valid))
        return {"checks": checks, **report}

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _toml_port(config: Path) -> str:
    import tomllib

    return str(tomllib.loads(config.read_text())["http"]["port"])


def _drive(deploy: Path, net: str) -> dict[str, Any]:
    from broker.natsd import find_nats_server
    from ixb.demo_exchange import STOLEN_PASSPORT, VALID_PASSPORT

    run = _Run(deploy, net)
    hosts = deploy / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{a} {s}\n" for s, a in run.addr.items()))
    mount = shutil.which("mount") or "/bin/mount"
    subprocess.run([mount, "--bind", str(hosts), "/etc/hosts"], check=True, timeout=10)
    try:
        report = run.servers(str(find_nats_server()))
        report |= run.hubs()
        report |= run.document_checks(list(VALID_PASSPORT), list(STOLEN_PASSPORT))
    finally:
        run.stop()
    return report


if __name__ == "__main__":
    sys.stdout.write(json.dumps(_drive(Path(sys.argv[1]), sys.argv[2])) + "\n")
