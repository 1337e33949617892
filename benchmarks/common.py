"""Shared by the benchmarks: the machine they ran on, and a shipped config built into objects in-process."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = os.environ.get("DIGITLAB_DATA_DIR") or str(REPO.parent / "shared" / "data" / "mnist")


def machine(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores, {cpu}; torch {torch.__version__}, {threads} thread(s); "
            f"Python {sys.version.split()[0]}")


def build(config: str, *overrides: str):
    """Model, data module and trainer exactly as `digitlab fit --config CONFIG OVERRIDES` makes them."""
    from digitlab.training.run import build_run, parse_run

    run = build_run(parse_run("fit", ["--config", str(REPO / config), *overrides]))
    return run.model, run.datamodule, run.trainer
