"""The README's integration examples work as printed: each code block starting with ``example: <name>`` is
run as it stands against a running system (the Node.js and Python bus clients) or as a test suite of its
own (the testing kit example, in a fresh directory, as a user of the installed package would)."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.chargepoint import connect
from tests.support.node import NODE_DIR, node_or_skip

ROOT = Path(__file__).resolve().parents[2]


def example(name: str) -> str:
    blocks = re.findall(r"```(?:js|python)\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    found = [block for block in blocks if re.match(rf"(#|//) example: {re.escape(name)}\n", block)]
    assert len(found) == 1, f"README.md has {len(found)} examples named {name}"
    return found[0]


async def run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    process = await asyncio.create_subprocess_exec(*argv, env={**os.environ, **env}, cwd=cwd,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode()
    assert process.returncode == 0, text
    return text


@pytest.mark.ocpp("Reset")
@pytest.mark.parametrize("language", ["node", "python"])
async def test_the_bus_client_examples(system, cp_id, tmp_path, language):
    if language == "node":
        argv = [node_or_skip(), "example.mjs"]
        (tmp_path / "example.mjs").write_text(example("node-bus"))
        (tmp_path / "node_modules").symlink_to(NODE_DIR / "node_modules")
    else:
        argv = [sys.executable, "example.py"]
        (tmp_path / "example.py").write_text(example("python-bus"))
    env = {"AMQP_URL": system.settings.amqp_url, "CSMS_NAMESPACE": system.settings.namespace,
           "CHARGE_POINT_ID": cp_id}
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        output = await run(argv, env, tmp_path)
        assert len(cp.received["Reset"]) == 1
    assert 'Reset: answered {"status": "Accepted"}' in output.replace('":"', '": "')
    assert "connected: true" in output.lower()
    if language == "node":
        assert "malformed: invalid chargePointId: unknown field" in output


async def test_the_testing_kit_example_runs_as_a_users_test_suite(tmp_path):
    (tmp_path / "test_example.py").write_text(example("testing-kit"))
    output = await run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"],
                       {}, tmp_path)
    assert "1 passed" in output
