"""Running the Node.js scripts in tests/node (AsyncAPI validation, the bus proof from another language).

Their npm packages come from tests/node/package-lock.json (`npm ci --prefix tests/node`, which .ci/run does).
Without node or those packages the tests fail under CI=true and are skipped elsewhere.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
PACKAGES = ("@asyncapi/parser", "amqplib", "ajv", "ajv-formats")


def node_or_skip() -> str:
    """The node executable, once the packages are installed; fails under CI=true, skips elsewhere."""
    node = shutil.which("node")
    missing = [name for name in PACKAGES if not (NODE_DIR / "node_modules" / name / "package.json").exists()]
    problem = ("node is not installed" if node is None else
               f"npm packages missing ({', '.join(missing)}): run npm ci --prefix tests/node --ignore-scripts" if missing else None)
    if problem is None:
        return node
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(problem)
    pytest.skip(problem)
