"""Load on `digitlab serve`: requests per second and latency (median, 99th percentile) with 1, 8 and 32 clients
posting pictures at once, with LitServe's batching on and off.

    python benchmarks/serve_load.py --ckpt_path last                 # 2 alternated runs of each setting
    python benchmarks/serve_load.py --ckpt_path model.ckpt --repeats 3 --requests 600

Each run starts `digitlab serve` afresh (batching on: `--max_batch_size 32 --batch_timeout 0.005`, its defaults;
off: `--max_batch_size 1`), sends warm-up requests, then, for each number of clients, `--requests` POSTs of the
pictures of examples/digits in turn (a 280×280 canvas PNG like the drawing page's, a 300×400 JPEG photo, two
small PNGs), each client waiting for its answer before it sends again. The settings alternate, run after run;
the table holds the median of the runs. Clients and server share the machine: on a small one the figures
include the clients' own work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import torch

from common import REPO, machine
from digitlab.deploy.serve.command import wait_until_ready

SETTINGS = {"on": ["--max_batch_size", "32", "--batch_timeout", "0.005"], "off": ["--max_batch_size", "1"]}
CLIENTS = (1, 8, 32)


@contextmanager
def serving(ckpt_path: str, options: list[str]) -> Iterator[str]:
    """`digitlab serve` on a free port of 127.0.0.1, its URL while it runs; Ctrl-C (SIGINT) at the end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(sys.executable).with_name("digitlab")
    process = subprocess.Popen([str(script), "serve", "--ckpt_path", ckpt_path, "--port", str(port), *options],
                               stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until_ready(url, timeout=300, alive=lambda: process.poll() is None):
            raise SystemExit(f"digitlab serve did not start (exit code {process.poll()})")
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


async def load(url: str, pictures: list[bytes], clients: int, requests: int) -> dict[str, float]:
    """`requests` POSTs by `clients` concurrent clients: requests per second, p50 and p99 latency in ms."""
    latencies: list[float] = []
    sent = 0

    async def client(session: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests:
            picture = pictures[sent % len(pictures)]
            sent += 1
            start = time.perf_counter()
            response = await session.post(f"{url}/predict", content=picture)
            latencies.append(time.perf_counter() - start)
            response.raise_for_status()

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    milliseconds = sorted(1000 * latency for latency in latencies)
    return {"rps": len(latencies) / elapsed, "p50": statistics.median(milliseconds),
            "p99": milliseconds[min(len(milliseconds) - 1, int(0.99 * len(milliseconds)))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", default="last")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--requests", type=int, default=400, help="requests per number of clients")
    options = parser.parse_args()
    pictures = [path.read_bytes() for path in sorted((REPO / "examples" / "digits").iterdir())]
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for repeat in range(options.repeats):
        for setting, flags in SETTINGS.items():
            with serving(options.ckpt_path, flags) as url:
                asyncio.run(load(url, pictures, 4, 40))  # warm-up: connections, the worker's first batches
                for clients in CLIENTS:
                    result = asyncio.run(load(url, pictures, clients, options.requests))
                    runs.setdefault((setting, clients), []).append(result)
                    print(f"run {repeat + 1}, batching {setting}, {clients:>2} clients: {result['rps']:6.1f} req/s, "
                          f"p50 {result['p50']:6.1f} ms, p99 {result['p99']:6.1f} ms", flush=True)
    print(f"\n{machine(torch.get_num_threads())}; median of {options.repeats} run(s), {options.requests} requests each\n")
    print("| batching | clients | requests/s | p50 latency | p99 latency |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for (setting, clients), results in runs.items():
        median = {key: statistics.median(r[key] for r in results) for key in ("rps", "p50", "p99")}
        print(f"| {setting} | {clients} | {median['rps']:.0f} | {median['p50']:.1f} ms | {median['p99']:.1f} ms |")


if __name__ == "__main__":
    main()
