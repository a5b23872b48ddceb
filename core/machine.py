"""What a result record says about the machine a run used: CPU model, cores, load, torch, GPU."""

from __future__ import annotations

import os
import platform
from typing import Any


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Static facts plus the load now (callers take it at start and at end of a run)."""
    import torch

    info: dict[str, Any] = {"cpu_model": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "torch": str(torch.__version__), "python": platform.python_version(), "hostname": platform.node(),
                            "load_avg_1_5_15": load_average(), "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


HARDWARE_KEYS = ("cpu_model", "cores", "gpu", "torch", "torch_threads")


def hardware(machine: dict[str, Any] | None) -> dict[str, Any]:
    """The facts of `machine_info()` that decide a run's numerics and speed (not its load, time or host name): what two
    arms, or two processes of one resumed run, must share for their figures to come from the same build."""
    if not isinstance(machine, dict):
        return {}
    # plain str, never torch's TorchVersion: the dict rides in checkpoints, which load with weights_only
    return {k: str(machine[k]) if isinstance(machine[k], str) else machine[k] for k in HARDWARE_KEYS if k in machine}


def note_hardware(history: list[list[Any]], step: int, machine: dict[str, Any]) -> list[list[Any]]:
    """A run's hardware history, [first update, hardware] per change of machine or build across its processes, with
    this process's stretch appended when it differs from the last one (a run resumed over several sessions then says
    what each stretch ran on). The list rides in the run's checkpoints; [0, None] stands for a stretch from before it
    was kept. Returns `history`, changed in place."""
    here = hardware(machine)
    if not history or history[-1][1] != here:
        history.append([step, here])
    return history


def restored_hardware_history(checkpoint: dict[str, Any]) -> list[list[Any]]:
    """The hardware history a checkpoint carries; [[0, None]] for one written before histories were kept."""
    return checkpoint.get("hardware_history") or [[0, None]]


def machine_at_end(machine_at_start: dict[str, Any]) -> dict[str, Any]:
    """A trainer summary's "machine": `machine_info()` from the process's start, with the load average at its end."""
    return {**machine_at_start, "load_avg_at_end": load_average()}


if __name__ == "__main__":
    # `python -m lmlab.core.machine > start.json` when a result starts; `python -m lmlab.core.records ... --since
    # start.json` then records this machine, the load at start and end, and the wall time in between.
    import json
    import time

    print(json.dumps({**machine_info(), "time": time.time()}))
