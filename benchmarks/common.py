"""What every benchmark shares: the machine it ran on, and writing its JSON result."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch
import torch_pruning

from prunekit.pruning.latency import machine

RESULTS = Path(__file__).parent / "results"


def cpu_name() -> str:
    """The CPU's model name: the one the latency model's cache is keyed by."""
    return machine()


def environment() -> dict:
    """Hardware and library versions, for the result file."""
    return {
        "hardware": {"machine": platform.machine(), "processor": cpu_name(), "cpu_threads": torch.get_num_threads(),
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torch_pruning": torch_pruning.__version__},
    }


def load_average(before: tuple[float, float, float]) -> dict:
    """{"before": the 1/5/15-minute load averages ``before`` the timings, "after": now}, rounded to 0.01."""
    return {"before": [round(v, 2) for v in before], "after": [round(v, 2) for v in os.getloadavg()]}


def write_result(result: dict, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result, **environment()}, indent=2) + "\n")
    print(f"wrote {out}")
    return out
