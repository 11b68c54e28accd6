"""What every benchmark does at the end: write its result as JSON, print it, and exit non-zero on a missed target."""
from __future__ import annotations

import json
from pathlib import Path


def finish(result: dict, output: str | Path) -> int:
    """Write `result` to `output` (folders made as needed) and print it; 1 when result["passed"] is False."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result.get("passed", True) else 1
