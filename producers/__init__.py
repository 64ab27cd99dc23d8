"""Ingestion: event sources and the producer that publishes them to Kafka.

Applications publish their own events with :class:`EventProducer`; batch and
demo ingestion drive a source (synthetic or a file) with :func:`produce`.
"""

from producers.app import EventProducer, ProducerStats
from producers.events import EventSource, RawPayload, Record, SourceItem
from producers.files import CsvSource, FileSource, JsonLinesSource, ParquetSource
from producers.pacing import Pacer
from producers.runner import ProduceReport, open_source, produce
from producers.synthetic import FAULT_KINDS, SyntheticSource

__all__ = [
    "EventProducer",
    "ProducerStats",
    "produce",
    "ProduceReport",
    "open_source",
    "EventSource",
    "Record",
    "RawPayload",
    "SourceItem",
    "SyntheticSource",
    "FAULT_KINDS",
    "FileSource",
    "CsvSource",
    "JsonLinesSource",
    "ParquetSource",
    "Pacer",
]
