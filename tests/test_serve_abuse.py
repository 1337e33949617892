"""`digitlab serve` under abuse, started for real: hostile JSON, bodies far over the limit, a flood of huge
pictures, undocumented routes and slow clients at a stop. Each is a 4xx/503 with a one-line reason (never a 500
or a reset), the server goes on, and a normal request is answered correctly afterwards."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw

from digitlab.deploy.serve.command import GRACEFUL_STOP_SECONDS
from conftest import REPO
from test_serve import Server, _group_ends, assert_answer, checkpoint, expected, pictures, png, post, start_server

pytestmark = pytest.mark.slow  # every test here starts a server

__all__ = ["checkpoint", "expected", "pictures"]  # fixtures shared with test_serve
TIMEOUT = 10  # the server's --timeout: also how long a picture may wait for its turn


def start(checkpoint: Path, folder: Path, *options: str) -> Server:
    return start_server(checkpoint, folder, "--timeout", str(TIMEOUT), *options)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    started = start(checkpoint, tmp_path_factory.mktemp("abuse"))
    try:
        yield started
        started.process.send_signal(signal.SIGINT)
        assert started.process.wait(timeout=60) == 0, started.log.read_text()[-3000:]
        assert "Traceback" not in started.log.read_text(), started.log.read_text()[-3000:]
    finally:
        if started.process.poll() is None or not _group_ends(started.process.pid, wait=0):
            os.killpg(started.process.pid, signal.SIGKILL)


@pytest.fixture
def normal_request_after(server, pictures, expected):
    yield
    assert_answer(post(server.url, (pictures / "7_chalk.png").read_bytes()), expected["7_chalk.png"])


def assert_refused(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text[:500]
    detail = response.json()["detail"]
    assert "\n" not in detail and len(detail) < 400, detail
    for fragment in fragments:
        assert fragment in detail, detail


ROW = ", ".join(["0.5"] * 28)
HOSTILE_JSON = {  # name: (body, status, what the reason says)
    "a number beyond float's range": (f'{{"image": [[1e400, {ROW[5:]}]' + f", [{ROW}]" * 27 + "]}", 400,
                                      "not a finite number"),
    "a negative one": ('{"image": -1e400}', 400, "not a finite number"),
    "an integer of 5000 digits": ('{"image": [[' + "9" * 5000 + "]]}", 400, "not a finite number"),
    "an integer of 30 digits": (json.dumps({"image": [[10**30] * 28] * 28}), 400, "out of range"),
    "arrays nested 100,000 deep": ("[" * 100_000 + "]" * 100_000, 400, "nested more than"),
    "objects nested 100,000 deep": ('{"a":' * 100_000 + "0" + "}" * 100_000, 400, "nested more than"),
    "deep nesting inside the image": ('{"image": ' + "[" * 5000 + "]" * 5000 + "}", 400, "nested more than"),
    "brackets in strings are not nesting": (json.dumps({"note": "[" * 5000, "image": [[2] * 28] * 28}), 400,
                                            "out of range"),
    "two megabytes of JSON": ('{"image": [' + "0, " * 700_000 + "0]}", 413, "JSON body too large"),
}


@pytest.mark.parametrize("case", list(HOSTILE_JSON))
def test_hostile_json_is_a_4xx_with_one_line(case, server, normal_request_after):
    body, status, reason = HOSTILE_JSON[case]
    assert_refused(post(server.url, body.encode(), "application/json"), status, reason)


def _fifty_megabytes():
    for _ in range(50 * 16):
        yield bytes(65536)


@pytest.mark.parametrize("how", ["declared", "chunked", "declared, just over"])
def test_a_body_far_over_the_limit_gets_its_413_not_a_reset(how, server, normal_request_after):
    body = {"declared": bytes(50 * 2**20), "chunked": _fifty_megabytes(),
            "declared, just over": bytes(8 * 2**20 + 1)}[how]
    assert_refused(post(server.url, body, "image/png"), 413, "body too large")


@pytest.mark.parametrize("size", [20 * 2**20, 50 * 2**20])
def test_a_client_sending_its_whole_body_reads_the_413(size, server, normal_request_after):
    """Over a plain socket, as a client that reads nothing before it has sent everything: no reset meanwhile."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           f"Content-Length: {size}\r\n\r\n".encode())
        block = bytes(2**20)
        for _ in range(size // len(block)):
            connection.sendall(block)  # a reset would raise here
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            received = connection.recv(65536)
            if not received:
                break
            answer += received
    assert answer.startswith(b"HTTP/1.1 413 ") and b"body too large" in answer, answer[:300]


@pytest.mark.parametrize("path", ["/info", "/docs", "/openapi.json", "/redoc"])
def test_no_undocumented_route_shows_the_servers_settings(path, server, normal_request_after):
    # The API is documented by docs/openapi.yaml, not by FastAPI's generated pages (which would show LitServe's).
    response = httpx.get(f"{server.url}{path}", timeout=30)
    assert response.status_code == 404 and "timeout" not in response.text


def test_docs_openapi_yaml_describes_every_route_and_only_those(server):
    import yaml

    spec = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    assert spec["openapi"].startswith("3.") and set(spec["paths"]) == {"/predict", "/health", "/model", "/"}
    for path, operations in spec["paths"].items():
        for method in operations:
            body = {"content": b"", "headers": {"Content-Type": "image/png"}} if method == "post" else {}
            response = httpx.request(method.upper(), f"{server.url}{path}", timeout=60, **body)
            assert response.status_code != 404 and str(response.status_code) in operations[method]["responses"]
    predict = spec["paths"]["/predict"]["post"]
    assert {"image/png", "application/json"} <= set(predict["requestBody"]["content"])
    assert {"200", "400", "413", "503", "504"} <= set(predict["responses"])


def huge_picture(seed: int) -> bytes:
    image = Image.new("L", (4096, 4096), 255)
    ImageDraw.Draw(image).line([(900 + seed, 600), (3000, 3500 - seed)], fill=0, width=300)
    return png(image)


@pytest.mark.parametrize("floods", [24, 60])
def test_a_flood_of_huge_pictures_is_bounded_and_a_normal_request_is_answered(floods, server, pictures, expected,
                                                                                normal_request_after):
    bodies = [huge_picture(seed) for seed in range(4)]
    normal = (pictures / "7_chalk.png").read_bytes()
    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=floods + 1)) as client, \
            ThreadPoolExecutor(floods + 1) as pool:
        flood = [pool.submit(post, server.url, bodies[index % 4], "image/png", client) for index in range(floods)]
        began = time.monotonic()
        answer = post(server.url, normal, "image/png", client)
        waited = time.monotonic() - began
        statuses = [future.result().status_code for future in flood]
    # The normal picture takes its turn in the light lane, never behind the huge ones.
    assert answer.status_code == 200, answer.text
    assert_answer(answer, expected["7_chalk.png"])
    assert waited < 2 * TIMEOUT + 10  # a turn is waited for at most --timeout, then the model's own timeout
    assert set(statuses) <= {200, 400, 503} and 200 in statuses, statuses


def test_sigterm_with_slow_clients_stops_within_seconds(checkpoint, tmp_path):
    server = start(checkpoint, tmp_path)
    port = int(server.url.rsplit(":", 1)[1])
    slow = []
    try:
        for index in range(6):
            connection = socket.create_connection(("127.0.0.1", port), timeout=30)
            head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
            connection.sendall(head.encode()[: 20 if index == 0 else None] + (b"\x89PNG" if index else b""))
            slow.append(connection)
        assert post(server.url, b"not a picture").status_code == 400  # the slow requests are under way
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=GRACEFUL_STOP_SECONDS + 30)
        stopped_after = time.monotonic() - began
        log = server.log.read_text()
        assert stopped_after < GRACEFUL_STOP_SECONDS, log[-3000:]  # the slow requests did not hold it up
        assert "Forcibly killing" not in log and "Traceback" not in log, log[-3000:]
        assert _group_ends(server.process.pid), "processes of the server outlived it"
        answers = [connection.recv(4096) for connection in slow[1:]]
        assert all(answer == b"" or b" 503 " in answer.split(b"\r\n")[0] for answer in answers), answers
    finally:
        for connection in slow:
            connection.close()
        if server.process.poll() is None or not _group_ends(server.process.pid, wait=0):
            os.killpg(server.process.pid, signal.SIGKILL)
