"""The evaluation room: sample metrics with real-vs-real references (``metrics``), tissue
metrics (``tissue``), the tissue segmenter whose features and masks they use (``segmenter``)
and the report that runs them all (``report``). Figures of a report live in ``oasis_lib.viz``."""

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {})  # submodules on first use: evaluation.tissue
