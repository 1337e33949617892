"""An example digitlab plugin: one model, `TinyCNN`, registered as ``tinycnn`` by its entry point."""

from digitlab_tinycnn.model import TinyCNN

__all__ = ["TinyCNN"]
