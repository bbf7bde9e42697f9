"""Generate the OpenAPI 3.1 document of the HTTP API, ``openapi/openapi.json``, from the code (the FastAPI app of
``services/api``, whose schemas are the pydantic models of ``csms.contracts``).

    python tools/gen_openapi.py          # rewrite openapi/openapi.json
    python tools/gen_openapi.py --check  # exit 1 if the committed file drifted from the code
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "libs"), str(ROOT)]

from services.api.app import create_app  # noqa: E402

DOCUMENT = ROOT / "openapi" / "openapi.json"


def render() -> str:
    return json.dumps(create_app().openapi(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not DOCUMENT.exists() or DOCUMENT.read_text(encoding="utf-8") != text:
            print("openapi/openapi.json is out of date: run python tools/gen_openapi.py", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.parent.mkdir(parents=True, exist_ok=True)
    DOCUMENT.write_text(text, encoding="utf-8")
    print(f"wrote {DOCUMENT.relative_to(ROOT)} ({len(json.loads(text)['paths'])} paths)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
