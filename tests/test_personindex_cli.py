"""The person index across two countries, as typed: MMR loads its index and answers
with ``ixb agency respond --index``; THA asks with ``ixb query person``; MMR's
``ixb index queries`` shows who asked. Real nats-servers, the CLI as subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.federation import PASSPHRASE, Federation, run_ixb, running_federation
from tests.test_cli_json import assert_times_iso

OWNER = "MMR/MOHA-ATTU"
ASKER = "THA/DSI-ATHD"
REFERENCE = "MMR-ATTU-2026-000112"
EXPORT = f"""reference,surname,given_names,birth_date,nationality,document_number
{REFERENCE},Nguyễn,Văn An,1990-04-02,VNM,C1234567
MMR-ATTU-2026-000113,SAMPLE,NARONG,1981,THA,
"""
PURPOSE = "EXAMPLE: trafficking in persons investigation"
LEGAL_BASIS = "EXAMPLE: ASEAN MLAT 2004"


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path) as federation:
        yield federation


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


class Responder:
    """``ixb agency respond`` as its own process, stopped with SIGTERM. Its blocking
    calls run in a thread: the hubs run in this event loop."""

    def __init__(self, profile: Path, *args: str, log: Path) -> None:
        self.log = log
        self.stderr = log.open("w")
        env = {**os.environ, "IXB_PASSPHRASE": PASSPHRASE, "IXB_LOG_LEVEL": "info"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ixb", "agency", "respond", "--profile", str(profile), *args],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def started(self) -> str:
        """What it printed when it started answering: one JSON object (``--json``)."""
        assert self.proc.stdout is not None
        lines = [self.proc.stdout.readline()]
        while lines[-1] not in ("}\n", ""):
            lines.append(self.proc.stdout.readline())
        return "".join(lines)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.stderr.close()
        return self.log.read_text(encoding="utf-8")


async def test_hit_no_hit_and_the_owners_record(fed: Federation, tmp_path: Path) -> None:
    owner = str(fed.deployment.profile(OWNER))
    asker = str(fed.deployment.profile(ASKER))
    index = tmp_path / "mmr-persons.index"
    export = tmp_path / "persons.csv"
    export.write_text(EXPORT, encoding="utf-8")

    loaded = json.loads(
        ok(await run_ixb("index", "load", str(export), "--profile", owner, "--index", str(index),
                         "--json"))
    )  # fmt: skip
    assert (loaded["added"], loaded["records"], loaded["references"]) == (2, 2, 2)
    assert b"NGUYEN" not in index.read_bytes() and b"Nguy" not in index.read_bytes()

    responder = Responder(
        Path(owner), "--index", str(index), "--json", log=tmp_path / "responder.log"
    )
    try:
        started = json.loads(await asyncio.to_thread(responder.started))
        assert started == {"agency": OWNER, "answering": ["person.query"]}

        def query(*terms: str) -> list[str]:
            return [
                "query", "person", "--profile", asker, "--to", OWNER,
                "--purpose", PURPOSE, "--legal-basis", LEGAL_BASIS, "--json", *terms,
            ]  # fmt: skip

        hit = json.loads(
            ok(await run_ixb(*query("--surname", "van an NGUYEN", "--birth-date", "1990-04-02")))
        )
        [result] = hit["results"]
        assert (result["agency"], result["hit"], result["reference"]) == (OWNER, True, REFERENCE)
        miss = json.loads(
            ok(await run_ixb(*query("--surname", "NGUYEN", "--given-names", "VAN AN",
                                    "--birth-date", "1990-04-03")))
        )  # fmt: skip
        assert [(r["hit"], r["reference"]) for r in miss["results"]] == [(False, None)]
        plain = [
            a for a in query("--surname", "Sample", "--given-names", "Narong") if a != "--json"
        ]
        human = ok(await run_ixb(*plain, "--birth-date", "1981-03-14"))
        assert human.strip() == f"{OWNER}: HIT, reference MMR-ATTU-2026-000113"
    finally:
        log = await asyncio.to_thread(responder.stop)

    # the owner's record: who asked, when, why, what was hit; never the terms
    listed = json.loads(
        ok(await run_ixb("index", "queries", "--profile", owner, "--index", str(index), "--json"))
    )
    queries = listed["queries"]
    assert [(q["requester"], q["hit"], q["references"]) for q in queries] == [
        (ASKER, True, [REFERENCE]),
        (ASKER, False, []),
        (ASKER, True, ["MMR-ATTU-2026-000113"]),
    ]
    assert {(q["purpose"], q["legal_basis"]) for q in queries} == {(PURPOSE, LEGAL_BASIS)}
    assert_times_iso([listed])
    assert hit["results"][0]["answer_id"] != miss["results"][0]["answer_id"]
    only = json.loads(
        ok(await run_ixb("index", "queries", "--profile", owner, "--index", str(index),
                         "--reference", REFERENCE, "--json"))
    )  # fmt: skip
    assert [q["message_id"] for q in only["queries"]] == [queries[0]["message_id"]]
    text = ok(await run_ixb("index", "queries", "--profile", owner, "--index", str(index)))
    assert f"{ASKER}  HIT {REFERENCE}" in text and f"purpose: {PURPOSE}" in text
    stats = json.loads(ok(await run_ixb("index", "stats", "--index", str(index), "--json")))
    assert (stats["records"], stats["queries"], stats["hits"]) == (2, 3, 2)

    # the responder logged each query by message id, never a term of it
    assert log.count("person_query_answered") == 3, log
    assert queries[0]["message_id"] in log
    for term in ("NGUYEN", "Nguy", "VAN AN", "Sample", "SAMPLE", "1990-04", "1981-03-14"):
        assert term not in log, term
    # nor did it keep the queries in its message store
    stored = json.loads(ok(await run_ixb("inbox", "--all", "--json", "--wait", "0.5",
                                         "--profile", owner)))  # fmt: skip
    assert [m for m in stored["messages"] if m["type"] == "person.query"] == []
    assert_no_term_in_files(tmp_path, export, index)


def assert_no_term_in_files(base: Path, export: Path, index: Path) -> None:
    """No file the federation wrote holds a term in clear: the hubs' audit logs and
    state, JetStream's stores, the agencies' state files, the index, the responder's log."""
    written = [p for p in base.rglob("*") if p.is_file() and p != export]
    assert index in written and any(p.suffix == ".state" for p in written)
    for path in written:
        data = path.read_bytes()
        for term in ("NGUYEN", "Nguyễn", "Narong", "NARONG", "1990-04-02", "1981-03-14"):
            assert term.encode() not in data, (term, path)


async def test_offline_mistakes_are_one_line(tmp_path: Path) -> None:
    # a bad export: one line naming the row, nothing loaded (no index file made)
    bad = tmp_path / "bad.csv"
    bad.write_text(EXPORT + "MMR-ATTU-2026-000114,,X,1990,VNM,\n", encoding="utf-8")
    index = tmp_path / "persons.index"
    refused = await run_ixb("index", "load", str(bad), "--index", str(index))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("error ixb.E_CONFIG: ") and "line 4: no surname" in (
        refused.stderr
    )
    assert not index.exists()
    neither = await run_ixb("agency", "respond")  # refused before any profile or connection
    assert neither.returncode == 2, neither.stderr
    assert (
        neither.stderr == "error ixb.E_USAGE: agency respond: give --documents, --index or both\n"
    )
    absent = await run_ixb("index", "stats", "--index", str(tmp_path / "absent.index"), "--json")
    assert absent.returncode == 2 and absent.stderr.startswith(
        "error ixb.E_CONFIG: no person index"
    )
    assert json.loads(absent.stdout)["error"]["code"] == "ixb.E_CONFIG"
    assert not (tmp_path / "absent.index").exists()
    odd = tmp_path / "persons.txt"
    odd.write_text("reference,surname\nR-1,A\n", encoding="utf-8")
    unknown = await run_ixb("index", "load", str(odd), "--index", str(tmp_path / "x.index"))
    assert unknown.returncode == 2 and "say --format csv or json" in unknown.stderr
