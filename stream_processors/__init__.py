"""The stream processor: validate raw events, quarantine bad ones, featurize good ones.

The record logic is pure and importable without faust (:mod:`.validation`,
:mod:`.features`, :mod:`.windows`, :mod:`.dead_letters`, :mod:`.pipeline`, the
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
    from stream_processors.features import FeatureSpec, featurize
    from stream_processors.pipeline import BatchProcessor
    from stream_processors.validation import Violation, validate
    from stream_processors.windows import WindowSpec, WindowState, window_features

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
#: schema with :mod:`.features` before anything loads the drift monitor's river and scipy.
_HOMES = {
    "BatchResult": "batches", "OutputRecord": "batches", "SourceRecord": "batches", "WindowUpdate": "batches",
    "Rejection": "dead_letters", "dead_letter_headers": "dead_letters", "read_rejection": "dead_letters",
    "FeatureSpec": "features", "featurize": "features", "BatchProcessor": "pipeline",
    "Violation": "validation", "validate": "validation",
    "WindowSpec": "windows", "WindowState": "windows", "window_features": "windows",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
