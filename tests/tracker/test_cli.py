"""``imgaccel tracker``: flags, refusals, and a real process that prints its port."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import aiohttp
from click.testing import CliRunner

from imgaccel.cli import main
from imgaccel.testing.procs import terminate

LISTENING = re.compile(r"^imgaccel tracker listening on (http://127\.0\.0\.1:(\d+))$")


def test_help_names_every_flag() -> None:
    result = CliRunner().invoke(main, ["tracker", "--help"])
    assert result.exit_code == 0
    for flag in (
        "--listen",
        "--data-dir",
        "--ca-cert",
        "--cert",
        "--key",
        "--insecure",
        "--announce-interval",
        "--peer-ttl",
        "--claim-lease",
        "--job-ttl",
    ):
        assert flag in result.output


def test_refuses_to_run_without_tls_or_insecure(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["tracker", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "give all of ca_cert, cert and key, or set insecure" in result.output


def test_refuses_a_bad_listen_address(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["tracker", "--insecure", "--data-dir", str(tmp_path), "--listen", "nowhere"]
    )
    assert result.exit_code == 2
    assert "expected HOST:PORT" in result.output


async def test_process_on_port_0_prints_its_url_first_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imgaccel",
        "tracker",
        "--listen",
        "127.0.0.1:0",
        "--insecure",
        "--data-dir",
        str(tmp_path),
        "--job-ttl",
        "30",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        first = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode().rstrip("\n")
        match = LISTENING.match(first)
        assert match, first
        assert int(match.group(2)) > 0
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{match.group(1)}/healthz") as r:
                assert await r.json() == {"status": "ok"}
            async with http.post(f"{match.group(1)}/v1/jobs", json={"images": ["r/a:1"]}) as r:
                job = await r.json()
                assert job["expires"] - job["created"] == 30  # --job-ttl
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        await terminate(proc)
    assert (tmp_path / "tracker.sqlite3").exists()
