"""A headless Chromium for browser tests: Debian's ``chromium`` (``/usr/bin/chromium``, or ``CHROMIUM``) driven by
``playwright-core`` from npm (tests/node, ``npm ci --prefix tests/node``; never ``npx playwright install``) through
tests/node/browser.mjs, which takes one JSON command per line. Tests stay in Python next to the simulated charge
points and wait on conditions in the page (``until``), never for fixed times.

Without node, the npm package or chromium the tests fail under CI=true and are skipped elsewhere.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.node import NODE_DIR

SCRIPT = NODE_DIR / "browser.mjs"
TIMEOUT_MS = 10_000  # what one wait in the page may take


def chromium_path() -> str:
    return os.environ.get("CHROMIUM", "/usr/bin/chromium")


def browser_or_skip() -> str:
    """The node executable, once playwright-core and chromium are there; fails under CI=true, skips elsewhere."""
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "playwright-core" / "package.json").exists():
        problem = "playwright-core missing: run npm ci --prefix tests/node --ignore-scripts"
    elif not os.access(chromium_path(), os.X_OK):
        problem = f"no chromium at {chromium_path()}: apt-get install chromium (or set CHROMIUM)"
    if problem is None:
        return node
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(problem)
    pytest.skip(problem)


class BrowserError(AssertionError):
    pass


class Browser:
    """One page in a headless Chromium. Every call waits at most ``TIMEOUT_MS`` in the page."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    @classmethod
    async def launch(cls) -> "Browser":
        node = browser_or_skip()
        process = await asyncio.create_subprocess_exec(
            node, str(SCRIPT), cwd=str(NODE_DIR), env={**os.environ, "CHROMIUM": chromium_path(),
                                                        "BROWSER_TIMEOUT_MS": str(TIMEOUT_MS)},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024)
        browser = cls(process)
        await browser.call("errors")  # the browser answers: it started
        return browser

    async def call(self, op: str, **args: Any) -> Any:
        async with self._lock:
            message_id = next(self._ids)
            self.process.stdin.write((json.dumps({"id": message_id, "op": op, "args": args}) + "\n").encode())
            await self.process.stdin.drain()
            line = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT_MS / 1000 + 30)
            if not line:
                stderr = (await self.process.stderr.read()).decode(errors="replace")
                raise BrowserError(f"the browser stopped: {stderr[-2000:]}")
            answer = json.loads(line)
            assert answer["id"] == message_id, answer
            if not answer["ok"]:
                raise BrowserError(f"{op}({json.dumps(args)[:300]}): {answer['error']}")
            return answer["value"]

    # ---- what tests use ------------------------------------------------------------------------------------
    async def goto(self, url: str) -> None:
        await self.call("goto", url=url)

    async def fill(self, selector: str, value: str) -> None:
        await self.call("fill", selector=selector, value=value)

    async def click(self, selector: str) -> None:
        await self.call("click", selector=selector)

    async def select(self, selector: str, value: str) -> None:
        await self.call("select", selector=selector, value=value)

    async def text(self, selector: str) -> str:
        return await self.call("text", selector=selector)

    async def count(self, selector: str) -> int:
        return await self.call("count", selector=selector)

    async def attributes(self, selector: str, *names: str) -> list[dict[str, str | None]]:
        return await self.call("attributes", selector=selector, names=list(names))

    async def wait(self, selector: str, state: str = "visible", timeout: int = TIMEOUT_MS) -> None:
        await self.call("wait", selector=selector, state=state, timeout=timeout)

    async def until(self, expression: str, arg: Any = None, timeout: int = TIMEOUT_MS) -> Any:
        """Wait until ``expression`` (a function body; ``arg`` is its argument) returns something truthy."""
        return await self.call("until", expression=expression, arg=arg, timeout=timeout)

    async def until_text(self, selector: str, text: str, timeout: int = TIMEOUT_MS) -> str:
        """Wait until the element's text contains ``text``; its text."""
        return await self.until("const n = document.querySelector(arg[0]); "
                                "return n && n.textContent.includes(arg[1]) ? n.textContent : null;",
                                [selector, text], timeout)

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        return await self.call("evaluate", expression=expression, arg=arg)

    async def screenshot(self, path: Path, full_page: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.call("screenshot", path=str(path), fullPage=full_page)

    async def errors(self) -> list[str]:
        """Errors thrown in the page and console errors since the last call."""
        return await self.call("errors")

    async def requests(self) -> list[str]:
        """URLs the page requested since the last call."""
        return await self.call("requests")

    async def close(self) -> None:
        if self.process.returncode is None:
            try:
                await asyncio.wait_for(self.call("close"), 10)
                await asyncio.wait_for(self.process.wait(), 10)
            except Exception:  # noqa: BLE001 - the browser hangs: end it
                self.process.kill()
                await self.process.wait()
