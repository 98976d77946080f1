"""The training room: the Trainer (resumable, exact on the CPU) and the EMA of the weights."""

from .._lazy import lazy_exports

#: Public name -> the module that defines it (imported when the name is first used).
_EXPORTS = {
    "EMA": ".ema",
    "NonFiniteLossError": ".trainer",
    "Trainer": ".trainer",
    "TrainResult": ".trainer",
    "train": ".trainer",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
