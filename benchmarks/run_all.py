"""Run every benchmark in this folder, one after another, and write one JSON summary.

Each benchmark writes its own benchmarks/results/<name>.json; this collects them (with each run's wall
time and exit code) into benchmarks/results/summary.json. Run on an otherwise idle machine.
Usage: python benchmarks/run_all.py [--only NAME ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BENCHMARKS = ["mri_speed", "detect_speed", "preprocess_speed", "mri_gan_step_speed", "app_speed"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=BENCHMARKS)
    args = parser.parse_args()
    summary = {}
    for name in args.only:
        print(f"=== {name} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.run([sys.executable, str(HERE / f"{name}.py")], cwd=HERE.parent).returncode
        result_file = RESULTS / f"{name}.json"
        summary[name] = {"exit_code": code, "wall_s": round(time.perf_counter() - start, 1),
                         "result": json.loads(result_file.read_text()) if code == 0 and result_file.is_file() else None}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = [name for name, info in summary.items() if info["exit_code"] != 0]
    print(f"summary: {RESULTS / 'summary.json'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
