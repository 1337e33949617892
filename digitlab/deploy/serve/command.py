"""`digitlab serve`: a checkpoint behind HTTP — ``POST /predict``, ``GET /health``, and ``GET /``, a page to draw
a digit on — built on LitServe."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
import warnings
from importlib.resources import files
from typing import Any, Callable, Optional

import torch

from digitlab.config.option_checks import OptionParser
from digitlab.errors import UserError
from digitlab.deploy.loading import add_checkpoint_arguments, load_model
from digitlab.deploy.serve.request_body import MAX_BODY_BYTES, MAX_PIXELS
from digitlab.runs import checkpoints

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe binds to
GRACEFUL_STOP_SECONDS = 5
# The page's line under which it names the checkpoint served.
PAGE_HINT = '<p class="hint">with the mouse, a finger or a pen: the model answers as you draw.</p>'


def serve_command(args: list[str]) -> None:
    options = serve_parser().parse_args(args)
    _check_options(options)
    # One torch thread in this process and in LitServe's HTTP server, which is forked from it and prepares the
    # pictures: preparing one is many small operations, for which OpenMP's threads cost far more than they bring,
    # above all on a machine whose cores are busy; requests run in parallel threads instead. It also keeps the
    # fork safe: a child forked after OpenMP's thread pool has started hangs in its first parallel operation
    # (GNU libgomp is not fork-safe). The model runs in LitServe's inference worker, a process of its own
    # (`DigitAPI.setup`).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # A bad checkpoint is refused here, before anything starts.
        trained = load_model(options.ckpt_path, options.default_root_dir)
    except BaseException:
        torch.set_num_threads(threads)  # nothing started: the process is left as it was
        raise
    print(trained.description, file=sys.stderr)
    server = build_server(str(trained.path.resolve()), options, trained.about)
    # --port 0: the system picks a free port; the socket is bound here and kept, and the URL says the real port.
    listener = _listening_socket(options.host) if options.port == 0 else None
    port = listener.getsockname()[1] if listener else options.port
    url = f"http://{'[::1]' if options.host == '::' else '127.0.0.1'}:{port}"
    print(f"Starting {trained.name} from {trained.path} ...", flush=True)
    threading.Thread(target=_announce_when_ready, args=(url,), daemon=True).start()
    _stop_on_signals()
    try:
        # A forked process: LitServe's other choice, a thread, cannot be stopped (its shutdown calls `terminate()`
        # on it, and the process never exits).
        server.run(host=options.host, port=port, generate_client_file=False, log_level=options.log_level,
                   num_api_servers=1, api_server_worker_type="process",
                   **({"fd": listener.fileno()} if listener else {}))  # uvicorn's `fd`: serve on that socket
    except KeyboardInterrupt:  # before LitServe's own shutdown was ready (while the model loads)
        pass


def _announce_when_ready(url: str) -> None:
    wait_until_ready(url)
    print(f"Serving at {url}/ : open it to draw a digit; POST pictures to {url}/predict. Ctrl-C stops.", flush=True)


def wait_until_ready(url: str, timeout: Optional[float] = None, alive: Callable[[], bool] = lambda: True) -> bool:
    """Whether the server at `url` says ok on ``/health`` (its model is loaded) within `timeout` seconds, while
    `alive()` holds (e.g. its process is running)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while alive() and (deadline is None or time.monotonic() < deadline):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM stop the server through LitServe's shutdown, which stops its processes in order.

    A Ctrl-C reaches every process of the terminal's group: LitServe's HTTP server, forked from this process,
    inherits this handler and leaves the signal to this process (which stops it), instead of printing a
    traceback; the inference worker ignores SIGINT (`DigitAPI.setup`) for the same reason.
    """
    main = os.getpid()

    def stop(signum: int, frame: object) -> None:
        if os.getpid() == main:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def build_server(ckpt_path: str, options: argparse.Namespace, about: Optional[dict[str, Any]] = None):
    """A LitServer for `ckpt_path`, with `PreparePictures` in front of ``POST /predict``, the page at ``/`` and
    ``GET /model``: `about` the checkpoint (`checkpoints.facts`: file, model, epoch, run), also named on the page."""
    import html

    import litserve
    from fastapi.responses import HTMLResponse, JSONResponse

    from digitlab.deploy.serve.api import DigitAPI
    from digitlab.deploy.serve.middleware import PreparePictures

    with warnings.catch_warnings():  # LitServe warns that batch/unbatch are unused without batching: intended
        warnings.simplefilter("ignore", UserWarning)
        api = DigitAPI(ckpt_path, max_batch_size=options.max_batch_size, batch_timeout=options.batch_timeout)
    middleware = (PreparePictures, {"path": api.api_path, "max_body_bytes": options.max_body_bytes,
                                    "max_pixels": options.max_pixels, "timeout": options.timeout})
    server = litserve.LitServer(api, accelerator=options.accelerator, devices=1, timeout=options.timeout,
                                middlewares=[middleware], disable_openapi_url=True)
    # How long a stop waits for requests under way: the middleware answers those still arriving at once, so
    # this is only a backstop against a request stuck elsewhere.
    server.uvicorn_graceful_timeout = GRACEFUL_STOP_SECONDS
    page = (files("digitlab.deploy.serve") / "page.html").read_text(encoding="utf-8")
    app = server.app
    # LitServe answers GET / with "litserve running" (the page replaces it) and GET /info with the server's
    # settings, which a client has no need to see (removed).
    app.router.routes = [route for route in app.router.routes
                         if getattr(route, "path", None) not in ("/", server.info_path)]
    if about:
        said = checkpoints.sentence(about).removeprefix("digitlab: using ")
        page = page.replace(PAGE_HINT, f'{PAGE_HINT}\n<p class="hint" id="model">Serving {html.escape(said)}</p>', 1)
    app.add_api_route("/", lambda: HTMLResponse(page), methods=["GET"], include_in_schema=False)
    app.add_api_route("/model", lambda: JSONResponse(about or {}), methods=["GET"], include_in_schema=False)
    return server


def _check_options(options: argparse.Namespace) -> None:
    """What the table of option checks (`digitlab.config.option_checks`) cannot say: options against each other
    and against the machine."""
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if options.accelerator in available and not available[options.accelerator]():
        raise UserError(f"--accelerator {options.accelerator}: this machine has none that torch can use. Use "
                        "--accelerator auto (a GPU if there is one) or cpu.")
    if options.batch_timeout >= options.timeout:
        raise UserError(f"--batch_timeout {options.batch_timeout} must be shorter than --timeout {options.timeout}.")
    _check_address(options.host, options.port)


def _check_address(host: str, port: int) -> None:
    if host not in HOSTS:
        raise UserError(f"--host {host} is not one LitServe can bind: use 127.0.0.1 (this machine only, the "
                        "default), 0.0.0.0 (every IPv4 interface) or :: (every interface).")
    if port == 0:
        return  # a free port, bound when the server starts
    if not 1024 <= port <= 65535:
        raise UserError(f"--port {port} is not valid: use a port from 1024 to 65535 (default 8000), or 0 for "
                        "any free port.")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(f"Cannot listen on {host}:{port}: {error.strerror or error}. Is another server "
                            "running there? Choose another port with --port.") from None


def _listening_socket(host: str) -> socket.socket:
    """A TCP socket bound to a free port of `host` (the system's choice), set up as uvicorn sets up its own."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by each connection it accepts
    listener.bind((host, 0))
    listener.set_inheritable(True)
    return listener


def serve_parser() -> OptionParser:
    parser = OptionParser(
        "serve",
        description="Serve a checkpoint over HTTP with LitServe: POST /predict takes a picture (PNG or JPEG bytes, or "
        'JSON {"image": 28x28 numbers in [0, 1]}) and answers {"digit": d, "probabilities": [10 numbers]}; '
        "GET / is a page to draw a digit on; GET /health says ok once the model is loaded; GET /model names the "
        'checkpoint served ({"checkpoint", "model", "epoch", "run"}).',
    )
    add_checkpoint_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default: this machine only), 0.0.0.0 or ::")
    parser.add_argument("--port", type=int, default=8000,
                        help="default: 8000; 0 lets the system pick a free port (the URL printed names it)")
    parser.add_argument("--max_batch_size", type=int, default=32,
                        help="requests answered by one forward pass, at most (default: 32; 1 turns batching off)")
    parser.add_argument("--batch_timeout", type=float, default=0.005,
                        help="seconds a batch waits for more requests (default: 0.005)")
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where the model runs (default: auto, a GPU if there is one)")
    parser.add_argument("--timeout", type=float, default=30, help="seconds a request may wait (default: 30)")
    parser.add_argument("--max_body_bytes", type=int, default=MAX_BODY_BYTES,
                        help=f"largest request body accepted (default: {MAX_BODY_BYTES:,})")
    parser.add_argument("--max_pixels", type=int, default=MAX_PIXELS,
                        help=f"largest picture accepted, in pixels (default: {MAX_PIXELS:,})")
    parser.add_argument("--log_level", default="warning", choices=["debug", "info", "warning", "error"],
                        help="server log level; info logs every request (default: warning)")
    return parser
