"""The stream processor: validate raw events, quarantine bad ones, featurize good ones.

The record logic is pure and importable without faust (the contract's
validation, the featurization and the windows live in the kernel, as
:mod:`streamml.validation`, :mod:`streamml.featurization` and
:mod:`streamml.windows`, because serving apps compute the same features;
here :mod:`.dead_letters`, :mod:`.pipeline`, the
distribution monitor in :mod:`.profiles` and :mod:`.drift`, the delayed-label
join in :mod:`.labels`); the faust wiring lives in :mod:`stream_processors.app`
(with :mod:`.delivery`, :mod:`.label_join`, :mod:`.recovery`) and the worker in
:mod:`stream_processors.worker`, imported on their own so that using the pure
parts does not load faust.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream_processors.batches import BatchResult, OutputRecord, SourceRecord, WindowUpdate
    from stream_processors.dead_letters import Rejection, dead_letter_headers, read_rejection
    from stream_processors.pipeline import BatchProcessor
    from streamml.featurization import FeatureSpec, featurize
    from streamml.validation import Violation, validate
    from streamml.windows import WindowSpec, WindowState, window_features

__all__ = [
    "BatchProcessor",
    "BatchResult",
    "FeatureSpec",
    "OutputRecord",
    "Rejection",
    "SourceRecord",
    "Violation",
    "WindowSpec",
    "WindowState",
    "WindowUpdate",
    "dead_letter_headers",
    "featurize",
    "read_rejection",
    "validate",
    "window_features",
]

#: Where each name lives. Imported on first use: ``streamml process`` checks a
#: schema with the featurizer before anything loads the drift monitor's river and scipy.
_HOMES = {
    "BatchResult": f"{__name__}.batches", "OutputRecord": f"{__name__}.batches",
    "SourceRecord": f"{__name__}.batches", "WindowUpdate": f"{__name__}.batches",
    "Rejection": f"{__name__}.dead_letters", "dead_letter_headers": f"{__name__}.dead_letters",
    "read_rejection": f"{__name__}.dead_letters", "BatchProcessor": f"{__name__}.pipeline",
    "FeatureSpec": "streamml.featurization", "featurize": "streamml.featurization",
    "Violation": "streamml.validation", "validate": "streamml.validation",
    "WindowSpec": "streamml.windows", "WindowState": "streamml.windows", "window_features": "streamml.windows",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
