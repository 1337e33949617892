"""Run by test_ddp.py as a script: fits or tests a model with Lightning's DDP on CPU processes (gloo), or on
GPUs (NCCL) with `--accelerator gpu` (test_gpu.py).

Lightning's subprocess launcher re-runs this script for every rank; each rank writes what it ended
with (weights and logged metrics) to OUT/rank<N>.pt for the test to compare. With one device, the tests call
`run` in their own process instead.
"""

import argparse
import sys
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything

sys.path.insert(0, str(Path(__file__).parent))
from digitlab.data import MNISTDataModule  # noqa: E402
from digitlab.models.registry import get_model_class  # noqa: E402

def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--val_split", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--eval_batch_size", type=int, default=16)
    parser.add_argument("--max_steps", type=int, default=-1)
    parser.add_argument("--fit", action="store_true")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> tuple[int, dict]:
    """This process's rank, and what it ended with: {"state": the model's weights, "metrics": logged values}."""
    seed_everything(0)
    model = get_model_class(args.model)()
    data = MNISTDataModule(args.data, download=False, verify=False, val_split=args.val_split,
                           batch_size=args.batch_size, eval_batch_size=args.eval_batch_size)
    trainer = Trainer(
        accelerator=args.accelerator, devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=1, max_steps=args.max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    metrics = {}
    if args.fit:
        trainer.fit(model, datamodule=data)
        metrics.update({k: v.item() for k, v in trainer.callback_metrics.items()})
    trainer.test(model, datamodule=data, verbose=False)
    metrics.update({k: v.item() for k, v in trainer.callback_metrics.items()})
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return trainer.global_rank, {"state": state, "metrics": metrics}


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    rank, ended = run(arguments)
    torch.save(ended, Path(arguments.out) / f"rank{rank}.pt")
