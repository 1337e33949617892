"""`DigitAPI`: the LitServe API that answers ``POST /predict`` with a digit and its ten probabilities.

It runs in LitServe's inference worker (its own process): the model is loaded there, from the checkpoint that
`digitlab serve` already checked. Requests arrive as prepared digits (see `middleware`); LitServe gathers those
that arrive together into one batch, up to `max_batch_size` within `batch_timeout` seconds, for one forward pass.
"""

from __future__ import annotations

import signal

import litserve
import torch

from digitlab.inference import load_model, model_input


class DigitAPI(litserve.LitAPI):
    def __init__(self, ckpt_path: str, max_batch_size: int = 1, batch_timeout: float = 0.0) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.ckpt_path = ckpt_path

    def setup(self, device: str) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # `digitlab serve` stops this process itself on Ctrl-C
        self.device = torch.device(device)
        self.model = load_model(self.ckpt_path).model.to(self.device)

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
