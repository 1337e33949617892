"""`DigitAPI`: the LitServe API that answers ``POST /predict`` with a digit and its ten probabilities.

It runs in LitServe's inference worker (its own process): the model is loaded there, from the checkpoint that
`digitlab serve` already checked. Requests arrive as prepared digits (see `middleware`); LitServe gathers those
that arrive together into one batch, up to `max_batch_size` within `batch_timeout` seconds, for one forward pass.
"""

from __future__ import annotations

import signal
from queue import Empty
from typing import Any

import litserve
import torch
from litserve.loops.simple_loops import BatchedLoop

from digitlab.deploy.loading import load_model, model_input


class DigitAPI(litserve.LitAPI):
    def __init__(self, ckpt_path: str, max_batch_size: int = 1, batch_timeout: float = 0.0) -> None:
        loop = WaitingBatchedLoop() if max_batch_size > 1 else "auto"
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, loop=loop)
        self.ckpt_path = ckpt_path

    def setup(self, device: str) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # `digitlab serve` stops this process itself on Ctrl-C
        self.device = torch.device(device)
        self.model = load_model(self.ckpt_path).model.to(self.device)
        if self.device.type == "cpu":
            # A digit model's forward pass is small (a few ms for 32 LeNet-5 digits on one core): OpenMP's
            # threads would cost more than they bring, and the HTTP server needs the other cores.
            torch.set_num_threads(1)

    def decode_request(self, request: dict) -> torch.Tensor:
        return torch.tensor(request["pixels"], dtype=torch.uint8).view(1, 28, 28)

    def batch(self, digits: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(digits)

    @torch.inference_mode()
    def predict(self, digits: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, 28, 28]`` -> probabilities ``[N, 10]``, as `digitlab predict` computes them."""
        return self.model(model_input(digits.to(self.device))).softmax(dim=1).cpu()

    def unbatch(self, probabilities: torch.Tensor) -> list[torch.Tensor]:
        return list(probabilities.split(1))

    def encode_response(self, probabilities: torch.Tensor) -> dict:
        row = probabilities[0]
        return {"digit": int(row.argmax()), "probabilities": row.tolist()}


class WaitingBatchedLoop(BatchedLoop):
    """LitServe's batched loop, except that while no request is waiting it waits for one, instead of asking the
    queue every millisecond (which keeps part of a core busy while idle). A batch then gathers, by
    LitServe's own code, what arrives within `batch_timeout` counted from its first request."""

    def get_batch_requests(self, lit_api: litserve.LitAPI, request_queue: Any, transport: Any) -> tuple[list, list]:
        try:
            first = request_queue.get(timeout=1.0)  # a timeout, to check for shutdown now and then
        except Empty:
            return [], []
        return super().get_batch_requests(lit_api, _FirstThen(first, request_queue), transport)


class _FirstThen:
    """The queue's interface LitServe's batching reads: `first`, then what `queue` holds."""

    def __init__(self, first: Any, queue: Any) -> None:
        self.first, self.queue = [first], queue

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self.first.pop() if self.first else self.queue.get(*args, **kwargs)

    def get_nowait(self) -> Any:
        return self.first.pop() if self.first else self.queue.get_nowait()
