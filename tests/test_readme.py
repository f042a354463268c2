"""README works verbatim: every shell command it shows runs against a running `ixb demo`.

The commands are read from the README itself (every ```sh block, in order),
so the README cannot drift from what works. Lines that would block or run the
whole suite are excluded by name below; the test checks they are still in the
README, so the list stays a mirror of it.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ixb.demo import PASSPHRASE, STOLEN_PASSPORT, VALID_PASSPORT

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
GIT = shutil.which("git")

EXCLUDED = {
    "make demo": "starts the federation and stays up until Ctrl-C (the test runs `ixb demo`)",
    "make test": "the whole suite",
}


def readme_commands() -> list[str]:
    """Every line of every ```sh block, comments and blank lines dropped, in README order."""
    blocks = re.findall(r"^```sh\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def runnable(commands: list[str]) -> list[str]:
    return [c for c in commands if not any(c.startswith(x) for x in EXCLUDED)]


def test_the_exclusions_mirror_the_readme() -> None:
    commands = readme_commands()
    for excluded in EXCLUDED:
        assert any(c.startswith(excluded) for c in commands), f"{excluded!r} no longer in README"
    assert len(runnable(commands)) >= 20  # the CLI section is there


class Demo:
    """``ixb demo`` (no flags: its default directory ./demo) in ``cwd``, stdout collected."""

    def __init__(self, cwd: Path) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ixb", "demo"],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            left = deadline - time.monotonic()
            assert left > 0 and self.proc.poll() is None, "".join(self.seen)
            try:
                self.seen.append(self.lines.get(timeout=min(left, 1.0)))
            except queue.Empty:
                continue

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.mark.timeout(600)
def test_every_readme_command_runs_against_the_demo(tmp_path: Path) -> None:
    # the README's paths, as seen from the repository root: the venv and the vectors
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    (tmp_path / "protocols").symlink_to(REPO / "protocols")
    demo = Demo(tmp_path)
    try:
        demo.wait_for("running until Ctrl-C", timeout=300)
        printed = "".join(demo.seen)
        assert "checks went as expected" in printed, printed
        # what the README tells the reader to take from the demo's last lines
        assert f"IXB_PASSPHRASE='{PASSPHRASE}'" in printed
        for agency in ("THA-DSI-ATHD", "THA-IMMIGRATION", "MYS-RMP-ATIPSOM"):
            assert str(tmp_path / "demo" / "agencies" / f"{agency}.toml") in printed
        for line in (*VALID_PASSPORT, *STOLEN_PASSPORT):
            assert line in printed
        assert "ixb mla list --profile demo/agencies/MYS-AGC.toml" in printed
        script = "set -euxo pipefail\n" + "\n".join(runnable(readme_commands())) + "\n"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IXB_")}
        env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # `ixb profile` writes here
        env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        result = subprocess.run(
            ["/bin/bash", "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=400,
            check=False,
        )
        tail = result.stderr[-3000:]
        assert result.returncode == 0, f"{result.stdout[-3000:]}\n--- stderr ---\n{tail}"
    finally:
        demo.stop()
    out = result.stdout
    assert "Traceback" not in result.stderr
    assert "signature      valid, signed by THA/DSI-ATHD and countersigned by every hop" in out
    assert re.search(
        r"sent alert \S+ to MYS/RMP-ATIPSOM \[trafficking, graded B2, H2, urgent\]", out
    ), out
    assert "accepted  signed by THA/HUB" in out
    assert "passport A12345678 (MYS) SAMPLE, SITI AMINAH, expires 2031-01-01" in out
    assert "MYS  directory version" in out and "MYS/RMP-ATIPSOM" in out
    assert "document_authority" in out  # MYS/IMMIGRATION's roles
    assert "* tha-immigration" in out
    assert (tmp_path / "config" / "ixb" / "profiles.toml").is_file()
    assert "mla.request  from THA/OAG" in out  # the demo's agencies keep what they receive
    assert "MYS/IMMIGRATION: valid" in out and "MYS/IMMIGRATION: reported_stolen" in out
    assert "MMR/MOHA-ATTU: HIT, reference MMR-ATTU-2026-000112" in out  # MMR's person index
    assert "THA/DSI-ATHD  HIT MMR-ATTU-2026-000112" in out  # its record of who asked
    assert "purpose: EXAMPLE: investigation" in out
    # the cases the demo's commands left, at each side (README's lines for them)
    assert "person.query to MYS/RMP-ATIPSOM" in out  # ixb overdue --open: still open at MYS
    assert re.search(r"person\.query\s+from THA/DSI-ATHD", out), out  # MYS police's queue
    assert re.search(r"doc\.verify\.request\s+from THA/IMMIGRATION", out), out  # MYS's queue
    assert re.search(r"from THA/OAG\s+in_execution\s+age ", out), out  # ixb mla list at MYS
    assert "[approved by Insp. EXAMPLE-OFFICER" in out  # ixb followup list --all at MMR
    assert "[refused by Insp. EXAMPLE-OFFICER" in out


def test_a_second_demo_clears_its_own_directory_and_refuses_anyone_elses(tmp_path: Path) -> None:
    from ixb.demo import MARKER, prepare_dir

    mine = tmp_path / "demo"
    assert prepare_dir(mine) is None  # new: nothing to say
    (mine / "keys").mkdir()
    (mine / "keys" / "left-over.key").write_text("x")
    said = prepare_dir(mine)
    assert said == f"ixb demo: cleared the previous run's {mine}"
    assert sorted(p.name for p in mine.iterdir()) == [MARKER]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    result = subprocess.run(
        [sys.executable, "-m", "ixb", "demo", "--once", "--dir", str(theirs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error ixb.E_USAGE: --dir ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert (theirs / "notes.txt").read_text() == "keep me"


@pytest.mark.skipif(GIT is None, reason="no git")
def test_demo_directory_is_ignored_by_git() -> None:
    ignored = subprocess.run(
        [GIT or "git", "check-ignore", "-q", "demo/agencies/THA-DSI-ATHD.toml"],
        cwd=REPO,
        check=False,
        timeout=30,
    )
    assert ignored.returncode == 0


@pytest.mark.timeout(300)
def test_building_the_package_gives_no_license_warning(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "project.license" not in output, output[-2000:]
    assert "License classifiers are deprecated" not in output
