"""Generate ocpp/coverage.json from the code: the services' handler registry says which OCPP
operations are supported, and the ``@pytest.mark.ocpp(...)`` markers on end-to-end tests say
which tests back each one.

    python tools/gen_coverage.py          # rewrite ocpp/coverage.json
    python tools/gen_coverage.py --check  # exit 1 if the committed file drifted
"""
from __future__ import annotations

import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "libs"), str(ROOT)]

from csms import ocpp16  # noqa: E402
from services.registry import load_services  # noqa: E402

TARGET = ROOT / "ocpp" / "coverage.json"
E2E_TESTS = ROOT / "tests" / "e2e"


def _marker_operations(decorator: ast.expr) -> list[str]:
    """The operations named by ``@pytest.mark.ocpp("A", "B")``; [] for any other decorator."""
    if isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute) \
            and decorator.func.attr == "ocpp" and ast.unparse(decorator.func.value) == "pytest.mark":
        return [arg.value for arg in decorator.args if isinstance(arg, ast.Constant)]
    return []


def tests_by_operation() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(E2E_TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                for decorator in node.decorator_list:
                    for operation in _marker_operations(decorator):
                        found[operation].append(f"{path.relative_to(ROOT).as_posix()}::{node.name}")
    return found


def _entries(cp_ops: tuple[str, ...], csms_ops: tuple[str, ...], tests: dict[str, list[str]]) -> list[dict]:
    services = load_services()
    handled = {op: s.name for s in services for op in s.calls}
    owned = {op: s.name for s in services for op in s.commands}
    entries = []
    for operation in sorted(set(cp_ops) | set(csms_ops)):
        directions = [d for d, ops in (("cp_to_csms", cp_ops), ("csms_to_cp", csms_ops)) if operation in ops]
        services_by_direction = {
            d: (handled if d == "cp_to_csms" else owned).get(operation) for d in directions
        }
        supported = all(services_by_direction.values())
        entries.append({
            "operation": operation,
            "direction": directions[0] if len(directions) == 1 else "both",
            "supported": supported,
            "services": services_by_direction,
            "tests": sorted(tests.get(operation, [])),
        })
    return entries


def render() -> str:
    tests = tests_by_operation()
    core = _entries(ocpp16.CP_TO_CSMS, ocpp16.CSMS_TO_CP, tests)
    security = _entries(ocpp16.SECURITY_CP_TO_CSMS, ocpp16.SECURITY_CSMS_TO_CP, tests)
    document = {
        "ocpp_version": "1.6J",
        "generated_by": "tools/gen_coverage.py (from the services' handler registry and @pytest.mark.ocpp markers)",
        "summary": {
            "operations": len(core),
            "supported": sum(e["supported"] for e in core),
            "security_extension_operations": len(security),
            "security_extension_supported": sum(e["supported"] for e in security),
        },
        "operations": core,
        "security_extension": security,
    }
    return json.dumps(document, indent=2) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is out of date: run python tools/gen_coverage.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
