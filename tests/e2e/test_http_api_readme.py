"""The README's HTTP API examples (``# example: http-...`` bash blocks) work as printed, with curl and jq, against
the running system and a simulated charge point."""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from tests.support.chargepoint import connect
from tests.support.http_api import http_api

ROOT = Path(__file__).resolve().parents[2]


def example(name: str) -> str:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    found = [block for block in blocks if block.startswith(f"# example: {name}\n")]
    assert len(found) == 1, f"README.md has {len(found)} examples named {name}"
    return found[0]


def tools() -> None:
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{missing} not installed")
        pytest.skip(f"{missing} not installed")


@pytest.mark.ocpp("Reset", "GetConfiguration")
async def test_the_command_examples(system, cp_id):
    tools()
    async with http_api(system) as (_, api), connect(system.url(cp_id)) as cp:
        await cp.boot()
        process = await asyncio.create_subprocess_exec(
            "bash", "-euo", "pipefail", "-c", example("http-commands"),
            env={**os.environ, "CSMS_API": api.base, "CSMS_KEY": api.keys["command"], "CHARGE_POINT_ID": cp_id},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    text = output.decode()
    assert process.returncode == 0, text
    sync, polled = text.strip().splitlines()
    assert sync == '{"status":"answered","payload":{"status":"Accepted"}}'
    assert polled.startswith('{"status":"answered","payload":{"configurationKey":[{"key":"HeartbeatInterval"')
    assert len(cp.received["Reset"]) == 1 and len(cp.received["GetConfiguration"]) == 1


async def test_the_events_example(system, cp_id):
    tools()
    async with http_api(system) as (_, api):
        process = await asyncio.create_subprocess_exec(
            "bash", "-euo", "pipefail", "-c", example("http-events"),
            env={**os.environ, "CSMS_API": api.base, "CSMS_KEY": api.keys["read"]},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        try:
            assert (await asyncio.wait_for(process.stdout.readline(), 10)) == b"retry: 3000\n"
            async with connect(system.url(cp_id)) as cp:
                await cp.boot()
                await cp.status(1, "Available")
                lines = []
                async with asyncio.timeout(10):
                    while b"event: connector.status_changed\n" not in lines:
                        lines.append(await process.stdout.readline())
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # bash and its curl
            await process.wait()
    assert b"event: station.connected\n" in lines and b"event: station.booted\n" in lines
    assert any(line.startswith(b"data: {") and cp_id.encode() in line for line in lines)
