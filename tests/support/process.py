"""A CSMS process (``python -m services...``) as a subprocess of a test, configured from a Settings object,
with its JSON log lines parsed as they come."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import aiohttp

from csms.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a process read ``settings`` (each field under its variable name)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CSMS_", "GATEWAY_", "OTEL_"))}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        alias = field.validation_alias.choices[0] if field.validation_alias is not None else name.upper()
        if isinstance(value, bool):
            env[str(alias)] = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            env[str(alias)] = json.dumps(value)
        else:
            env[str(alias)] = str(value)
    env.update(LOG_FORMAT="json", PYTHONUNBUFFERED="1", **extra)
    return env


class CsmsProcess:
    def __init__(self, module: str, settings: Settings, **env: str):
        self.module = module
        self.env = environment(settings, **env)
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self._new_line = asyncio.Event()
        self._reader: asyncio.Task | None = None

    async def start(self) -> "CsmsProcess":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.module, cwd=str(ROOT), env=self.env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode(errors="replace").rstrip("\n")
            try:
                record = json.loads(text)
                if not isinstance(record, dict):
                    raise ValueError
            except ValueError:
                record = {"raw": text}
            self.lines.append(record)
            self._new_line.set()

    async def wait_for_line(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                for record in self.lines:
                    if predicate(record):
                        return record
                if self.proc is not None and self.proc.returncode is not None and self._reader.done():
                    raise AssertionError(f"{self.module} exited with {self.proc.returncode}: {self.output()}")
                self._new_line.clear()
                await self._new_line.wait()

    async def wait_for_message(self, pattern: str, timeout: float = 15.0) -> re.Match:
        regex = re.compile(pattern)
        record = await self.wait_for_line(lambda r: bool(regex.search(r.get("message", ""))), timeout)
        return regex.search(record["message"])

    async def ops_port(self) -> int:
        return int((await self.wait_for_message(r"ops endpoint on http://[^:]+:(\d+)")).group(1))

    def messages(self) -> list[str]:
        return [r.get("message", r.get("raw", "")) for r in self.lines]

    def output(self) -> str:
        return "\n".join(self.messages()[-40:])

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return code

    async def stop(self) -> None:
        """End the process if it still runs (SIGKILL after 10 s)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def http_get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}",
                                                         timeout=aiohttp.ClientTimeout(total=5)) as response:
        return response.status, await response.text()


async def eventually_status(port: int, path: str, status: int, timeout: float = 10.0) -> str:
    """Poll ``path`` until it answers ``status``; returns the body."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    last = await http_get(port, path)
                    if last[0] == status:
                        return last[1]
                except aiohttp.ClientError as exc:
                    last = exc
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{path} never answered {status}; last: {last}") from None
