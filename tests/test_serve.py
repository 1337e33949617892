"""`digitlab serve`, started for real on a loopback port of its own choice (`--port 0`) and spoken to over HTTP: answers equal to
`digitlab predict`'s, every bad request a 4xx after which the server goes on, many clients at once, the
drawing page in a real headless Chromium, a clean stop on Ctrl-C; and bad starts refused before anything binds."""

from __future__ import annotations

import base64
import csv
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from checkpoint_files import synthetic_checkpoint, write_checkpoint
from conftest import REPO, assert_user_error
from test_cli import QUIET
from waiting import line_in, running, wait_for

CHROMIUM = Path("/usr/bin/chromium")
LIMITS = {"max_body_bytes": 1_000_000, "max_pixels": 1_000_000}  # small, so that the tests' bodies stay small


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path


def scribble(rng: random.Random) -> Image.Image:
    """A random pen stroke: any size, dark on light or light on dark, sometimes on a transparent canvas."""
    size = (rng.randint(60, 400), rng.randint(60, 400))
    ink, paper = ((20, 20, 30), (245, 240, 225)) if rng.random() < 0.6 else ((250, 250, 250), (10, 10, 10))
    transparent = rng.random() < 0.2
    image = Image.new("RGBA" if transparent else "RGB", size, (0, 0, 0, 0) if transparent else paper)
    points = [(rng.uniform(0.2, 0.8) * size[0], rng.uniform(0.15, 0.85) * size[1]) for _ in range(rng.randint(2, 6))]
    ImageDraw.Draw(image).line(points, fill=ink, width=max(3, min(size) // 12), joint="curve")
    return image


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    """examples/digits, 14 random strokes as PNG and JPEG, and `array.png`, a 28×28 grey picture (also sent as JSON)."""
    folder = tmp_path_factory.mktemp("pictures")
    for example in (REPO / "examples" / "digits").iterdir():
        shutil.copy(example, folder)
    rng = random.Random(0)
    for index in range(14):
        image = scribble(rng)
        if index % 3 == 2:
            image.convert("RGB").save(folder / f"stroke_{index}.jpg", quality=85)
        else:
            image.save(folder / f"stroke_{index}.png")
    scribble(rng).convert("L").resize((28, 28), Image.LANCZOS).save(folder / "array.png")
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return synthetic_checkpoint("lenet5", tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def expected(checkpoint, pictures, tmp_path_factory) -> dict[str, tuple[int, float]]:
    """What `digitlab predict --data.predict_images` says of each picture: file name -> (digit, probability)."""
    from digitlab.training.run import main as run

    folder = tmp_path_factory.mktemp("predict")
    run(["predict", "--model", "lenet5", "--ckpt_path", str(checkpoint), "--data.predict_images", str(pictures),
         "--predictions.csv", str(folder / "predictions.csv"), "--trainer.logger", "false",
         "--trainer.default_root_dir", str(folder), *QUIET])
    table = folder / "predictions.csv"
    with table.open() as rows:
        return {Path(row["file"]).name: (int(row["predicted"]), float(row["probability"])) for row in csv.DictReader(rows)}


def start_server(checkpoint: Path, folder: Path, *options: str) -> Server:
    """`digitlab serve --port 0 OPTIONS` in its own process (and session), once it says where it serves."""
    log = folder / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "DIGITLAB_DATA_DIR"}
    command = [str(Path(sys.executable).with_name("digitlab")), "serve", "--ckpt_path", str(checkpoint),
               "--port", "0", *options]
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=folder, env={**env, "DIGITLAB_DISABLE_PLUGINS": "1"},
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:  # the server says where it serves once /health answers ok
        url = wait_for(line_in(log, r"Serving at (http://127\.0\.0\.1:[0-9]+)/ "), 240, "digitlab serve ready",
                       alive=running(process)).group(1)
    except AssertionError as error:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"{error}:\n{log.read_text()[-3000:]}")
    assert not url.endswith(":0")
    return Server(url, process, log)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """`digitlab serve` until the module's tests are done; then Ctrl-C, which must stop it and every process it
    started, with exit code 0 and no traceback."""
    started = start_server(checkpoint, tmp_path_factory.mktemp("serve"), "--log_level=info",  # a line per request
                           *(f"--{key}={value}" for key, value in LIMITS.items()))
    process, log = started.process, started.log
    try:
        yield started
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
        assert _group_ends(process.pid), "processes of the server outlived it"
        assert f"Serving at {started.url}/" in log.read_text()
    finally:
        if process.poll() is None or not _group_ends(process.pid, wait=0):
            os.killpg(process.pid, signal.SIGKILL)


def _group_ends(group: int, wait: float = 10) -> bool:
    def ended() -> bool:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        return wait_for(ended, wait, f"process group {group} to end")
    except AssertionError:
        return False


def post(url: str, body: bytes, content_type: str = "application/octet-stream", client=httpx) -> httpx.Response:
    return client.post(f"{url}/predict", content=body, headers={"Content-Type": content_type}, timeout=60)


def assert_answer(response: httpx.Response, expected: tuple[int, float]) -> None:
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"digit", "probabilities"} and len(answer["probabilities"]) == 10
    assert abs(sum(answer["probabilities"]) - 1) < 1e-5
    assert answer["digit"] == int(np.argmax(answer["probabilities"]))
    # predict prints 4 decimals; the server may batch differently, which changes nothing visible at 1e-4
    assert (answer["digit"], round(answer["probabilities"][answer["digit"]], 4)) == pytest.approx(expected, abs=1.1e-4)


def test_health_and_a_self_contained_page(server):
    assert httpx.get(f"{server.url}/health").text == "ok"
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text and 'id="clear"' in page.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text) and "@import" not in page.text


def readme_client() -> str:
    """README's Python client for `digitlab serve`."""
    [snippet] = [block for block in re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
                 if "/predict" in block]
    return snippet


def test_readmes_python_client_works_as_written_and_info_logs_each_request(server):
    snippet = readme_client()
    assert "http://127.0.0.1:8000/predict" in snippet
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the standard library only
    result = subprocess.run([sys.executable, "-c", snippet.replace("http://127.0.0.1:8000", server.url)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = post(server.url, (REPO / "examples" / "digits" / "7_chalk.png").read_bytes(), "image/png").json()
    assert result.stdout.split() == [str(answer["digit"]), str(max(answer["probabilities"]))]
    wait_for(line_in(server.log, r'"POST /predict HTTP/1\.1" 200'), 30, "--log_level info's line for a request")


def test_every_picture_gets_digitlab_predicts_answer(server, pictures, expected):
    assert len(expected) == len(list(pictures.iterdir())) == 19
    for path in sorted(pictures.iterdir()):
        assert_answer(post(server.url, path.read_bytes()), expected[path.name])


def test_a_json_array_is_a_picture_like_any_other(server, pictures, expected):
    grey = np.asarray(Image.open(pictures / "array.png"), dtype=np.float64) / 255
    body = json.dumps({"image": grey.tolist()}).encode()
    assert_answer(post(server.url, body, "application/json"), expected["array.png"])
    assert_answer(post(server.url, body, "text/plain"), expected["array.png"])  # a JSON object is recognised


def png(image: Image.Image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def chunks(size: int):
    for _ in range(size // 65536):
        yield bytes(65536)


BAD_REQUESTS = {  # name: (body, content type, status, what the reason says)
    "empty body": (b"", "image/png", 400, "empty body"),
    "not a picture": (b"hello, server", "image/png", 400, "not a picture"),
    "damaged picture": (None, "image/png", 400, "unreadable picture"),
    "blank picture": (png(Image.new("L", (50, 40), 255)), "image/png", 400, "blank"),
    "invalid JSON": (b'{"image": [[0.5, 1', "application/json", 400, "not valid JSON"),
    "NaN in JSON": (json.dumps({"image": [[float("nan")] * 28] * 28}).encode(), "application/json", 400,
                    "not valid JSON"),
    "JSON of the wrong shape": (json.dumps({"image": [[0.5] * 28] * 27}).encode(), "application/json", 400,
                                "wrong JSON shape"),
    "JSON without an image": (json.dumps({"pixels": [0] * 784}).encode(), "application/json", 400,
                              "wrong JSON shape"),
    "JSON out of range": (json.dumps({"image": [[255] * 28] * 28}).encode(), "application/json", 400,
                          "out of range"),
    "too many pixels": (png(Image.new("L", (1200, 1000), 0)), "image/png", 413, "picture too large"),
    "body too large": (bytes(1_500_000), "image/png", 413, "body too large"),
    "body too large, sent in chunks": (lambda: chunks(1_500_000), "image/png", 413, "body too large"),  # new each time
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_is_a_4xx_with_a_reason_and_the_server_goes_on(case, server, pictures, expected):
    body, content_type, status, reason = BAD_REQUESTS[case]
    if body is None:
        body = (pictures / "4_canvas.png").read_bytes()[:300]
    elif callable(body):
        body = body()
    response = post(server.url, body, content_type)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert reason in detail and "\n" not in detail
    assert_answer(post(server.url, (pictures / "7_chalk.png").read_bytes()), expected["7_chalk.png"])


def test_other_methods_are_refused_and_the_server_goes_on(server, pictures, expected):
    assert httpx.get(f"{server.url}/predict").status_code == 405
    assert_answer(post(server.url, (pictures / "3_pen.jpg").read_bytes()), expected["3_pen.jpg"])


def test_sixteen_clients_at_once_all_get_their_own_answers(server, pictures, expected):
    files = sorted(pictures.iterdir())

    def client(number: int) -> list[tuple[str, httpx.Response]]:
        order = files[number % len(files):] + files[:number % len(files)]  # every client its own order
        with httpx.Client() as session:
            return [(path.name, post(server.url, path.read_bytes(), client=session)) for path in order]

    with ThreadPoolExecutor(16) as pool:
        answers = [answer for answers in pool.map(client, range(16)) for answer in answers]
    assert len(answers) == 16 * len(files)
    for name, response in answers:
        assert_answer(response, expected[name])


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium, driven by Playwright (whose own browser download is not used)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's `chromium` package (.ci/run does) to test the page")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


def wait_for_a_digit(page) -> int:
    page.wait_for_function("/^[0-9]$/.test(document.getElementById('digit').textContent)", timeout=30000)
    return int(page.inner_text("#digit"))


def bar_heights(page) -> list[float]:
    return page.eval_on_selector_all(".bar", "bars => bars.map(bar => parseFloat(bar.style.height))")


def test_the_page_predicts_while_a_digit_is_drawn(server, browser):
    page = browser.new_page()
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{server.url}/")
    assert page.inner_text("#digit") == "?" and bar_heights(page) == [0] * 10
    box = page.locator("#pad").bounding_box()
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x + 0.25 * w, y + 0.2 * h)
    page.mouse.down()
    for fx, fy in [(0.75, 0.2), (0.55, 0.5), (0.45, 0.85)]:  # a 7
        page.mouse.move(x + fx * w, y + fy * h, steps=8)
    wait_for_a_digit(page)  # while the button is still down: the page predicts as the digit is drawn
    page.mouse.up()
    # The answer for the finished stroke: no request in flight and no change left to send (the page's state).
    page.wait_for_function("!inFlight && !changed", timeout=30000)
    digit, heights = wait_for_a_digit(page), bar_heights(page)
    assert len(heights) == 10 and abs(sum(heights) - 100) < 1 and heights.index(max(heights)) == digit
    assert sum(url.endswith("/predict") for url in requests) >= 2
    # The page shows what the API says of the page's own picture.
    drawn = base64.b64decode(page.evaluate("document.getElementById('pad').toDataURL('image/png')").split(",")[1])
    assert post(server.url, drawn, "image/png").json()["digit"] == digit
    page.click("#clear")
    assert page.inner_text("#digit") == "?" and bar_heights(page) == [0] * 10
    page.close()


def test_a_finger_draws_too(server, browser):
    context = browser.new_context(has_touch=True, viewport={"width": 400, "height": 800})
    page = context.new_page()
    page.goto(f"{server.url}/")
    box = page.locator("#pad").bounding_box()
    page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    wait_for_a_digit(page)
    context.close()


# -- the same, in this process: LitServe's API and the middleware, without a server ---------------------------


@pytest.fixture(scope="module")
def in_process(checkpoint):
    """What `digitlab serve` puts behind ``POST /predict``, in this process: `PreparePictures` (with the test's
    limits) in front of an ASGI app that runs `DigitAPI` as LitServe's batched loop does (decode, batch,
    predict, unbatch, encode), and the LitServer `build_server` makes, for its other routes."""
    import argparse
    import signal as signals

    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.testclient import TestClient

    from digitlab.deploy.serve.api import DigitAPI
    from digitlab.deploy.serve.command import build_server, serve_parser
    from digitlab.deploy.serve.middleware import PreparePictures

    api = DigitAPI(str(checkpoint), max_batch_size=4, batch_timeout=0.005)
    sigint, threads = signals.getsignal(signals.SIGINT), torch.get_num_threads()
    try:
        api.setup("cpu")  # as LitServe's inference worker: it ignores Ctrl-C and takes one thread
        assert signals.getsignal(signals.SIGINT) is signals.SIG_IGN and torch.get_num_threads() == 1
    finally:
        signals.signal(signals.SIGINT, sigint)
        torch.set_num_threads(threads)

    async def answer(scope, receive, send):
        request = Request(scope, receive)
        assert request.headers["content-type"] == "application/json"
        [probabilities] = api.unbatch(api.predict(api.batch([api.decode_request(await request.json())])))
        await JSONResponse(api.encode_response(probabilities))(scope, receive, send)

    options = serve_parser().parse_args(["--ckpt_path", str(checkpoint), *(f"--{k}={v}" for k, v in LIMITS.items())])
    server = build_server(str(checkpoint), options)
    client = TestClient(PreparePictures(answer, path="/predict", **LIMITS))  # no lifespan: only requests
    return argparse.Namespace(client=client, server=server, api=api)


def test_in_process_every_picture_gets_digitlab_predicts_answer(in_process, pictures, expected):
    for path in sorted(pictures.iterdir()):
        assert_answer(post("", path.read_bytes(), client=in_process.client), expected[path.name])
    grey = np.asarray(Image.open(pictures / "array.png"), dtype=np.float64) / 255
    body = json.dumps({"image": grey.tolist()}).encode()
    assert_answer(post("", body, "text/plain", client=in_process.client), expected["array.png"])


def test_in_process_a_batch_answers_each_digit_as_alone(in_process, pictures):
    from digitlab.deploy.serve.request_body import digit_from_body

    api = in_process.api
    digits = [digit_from_body(path.read_bytes()).view(1, 28, 28) for path in sorted(pictures.iterdir())[:4]]
    together = api.unbatch(api.predict(api.batch(digits)))
    alone = [api.predict(digit) for digit in digits]
    assert len(together) == 4 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(together, alone))


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_in_process_a_bad_request_is_a_4xx_with_a_reason(case, in_process, pictures):
    body, content_type, status, reason = BAD_REQUESTS[case]
    if body is None:
        body = (pictures / "4_canvas.png").read_bytes()[:300]
    elif callable(body):
        body = body()
    response = post("", body, content_type, client=in_process.client)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert reason in detail and "\n" not in detail


def test_in_process_the_server_routes_the_page_and_refuses_other_methods(in_process):
    from starlette.testclient import TestClient

    client = TestClient(in_process.server.app)  # no lifespan: no inference worker, only the routes
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text
    assert client.get("/predict").status_code == 405


def test_in_process_the_page_and_get_model_name_the_checkpoint_served(checkpoint, tmp_path):
    from starlette.testclient import TestClient

    from digitlab.deploy.loading import load_model
    from digitlab.deploy.serve.command import build_server, serve_parser

    trained = load_model(str(checkpoint))
    options = serve_parser().parse_args(["--ckpt_path", str(checkpoint)])
    client = TestClient(build_server(str(checkpoint), options, trained.about).app)
    about = client.get("/model").json()
    assert about == trained.about and about["model"] == trained.name and about["checkpoint"].endswith(".ckpt")
    assert set(about) == {"checkpoint", "model", "epoch", "run"}
    assert f'id="model">Serving {about["checkpoint"]} ({trained.name}' in client.get("/").text


# -- refused at start, before anything binds ----------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing checkpoint", "foreign checkpoint", "port in use", "host", "batch timeout",
                                  "accelerator"])
def test_a_bad_start_is_one_clear_error_and_binds_nothing(case, tmp_path, checkpoint, digitlab_main, monkeypatch):
    import litserve

    taken = socket.socket()  # a port held by this test (from the system: no other test has it) for "port in use"
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    started = []  # what would start a server in this process: LitServe's run, or a socket's listen
    monkeypatch.setattr(litserve.LitServer, "run", lambda *args, **kwargs: started.append("LitServer.run"))
    monkeypatch.setattr(socket.socket, "listen", lambda *args, **kwargs: started.append("listen"))
    args = ["--ckpt_path", str(checkpoint), "--port", str(port) if case == "port in use" else "0"]
    expected = {"missing checkpoint": "no such file", "foreign checkpoint": "package somewhere, which is not installed",
                "port in use": f"Cannot listen on 127.0.0.1:{port}", "host": "--host 192.0.2.1",
                "batch timeout": "--batch_timeout -1.0 is not valid", "accelerator": "--accelerator"}[case]
    if case == "accelerator" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if case == "missing checkpoint":
        args[1] = str(tmp_path / "nowhere.ckpt")
    elif case == "foreign checkpoint":
        args[1] = str(write_checkpoint(tmp_path / "foreign.ckpt", "somewhere.else.Net", {}))
    elif case == "host":
        args += ["--host", "192.0.2.1"]
    elif case == "batch timeout":
        args += ["--batch_timeout", "-1"]
    elif case == "accelerator":
        args += ["--accelerator", "cuda"]
    with taken:
        result = digitlab_main("serve", *args, cwd=tmp_path)
    assert_user_error(result, expected)
    assert started == []  # refused before anything was started or bound
