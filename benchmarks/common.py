"""What benchmarks share: timing repeated calls (with a clock that waits for the GPU), and at the end writing the
result as JSON, printing it and exiting non-zero on a missed target."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch


def clock(device: torch.device) -> float:
    """time.perf_counter() once `device` has finished its queued work: CUDA kernels run asynchronously, so without
    the synchronisation a timing would measure only how long it took to queue them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def time_calls(call: Callable[[], object], repeats: int, device: torch.device = torch.device("cpu")) -> dict:
    """Median and every time (s) of `repeats` calls of `call`, after one untimed warm-up call, read with `clock`
    for the device the calls compute on; the load average of the machine (1 min) is recorded, since other
    processes share its cores."""
    call()  # warm-up: allocations, kernel selection
    times = []
    for _ in range(repeats):
        start = clock(device)
        call()
        times.append(clock(device) - start)
    return {"median": float(np.median(times)), "all": times, "load_1min": os.getloadavg()[0]}


def finish(result: dict, output: str | Path) -> int:
    """Write `result` to `output` (folders made as needed) and print it; 1 when result["passed"] is False."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result.get("passed", True) else 1
