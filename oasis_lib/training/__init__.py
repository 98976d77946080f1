"""The training room: the Trainer (resumable, exact on the CPU) and the EMA of the weights."""

from .ema import EMA
from .trainer import NonFiniteLossError, Trainer, TrainResult, train

__all__ = ["EMA", "NonFiniteLossError", "TrainResult", "Trainer", "train"]
