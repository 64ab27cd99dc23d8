"""Event sources reading CSV, JSON-lines and Parquet files.

Each file is read in chunks (``chunk_size`` rows) so a large file never has to
fit in memory, and every row is coerced to the schema's types by
:class:`~producers.coercion.RowCoercer`. The columns are checked when the
source is created, so a file missing a required column fails with a
:class:`SourceError` before anything is sent. Columns the schema does not know
are ignored, with one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from producers.coercion import RowCoercer
from producers.events import SourceItem
from streamml.errors import SourceError
from streamml.serde import AvroSchema

__all__ = ["FileSource", "CsvSource", "JsonLinesSource", "ParquetSource", "DEFAULT_CHUNK_SIZE"]

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 10_000


class FileSource:
    """Base of the file sources: column checks, coercion and row numbering.

    Subclasses implement :meth:`_columns` (the header, read cheaply) and
    :meth:`_chunks` (the rows, as lists of mappings). Row numbers in errors are
    1-based and count data rows only (a CSV header is not a row).
    """

    kind = "file"

    def __init__(self, path: str | Path, schema: AvroSchema, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.path = Path(path)
        self.schema = schema
        self.chunk_size = chunk_size
        self.name = f"{self.kind}({self.path})"
        self._coercer = RowCoercer(schema)
        if not self.path.is_file():
            raise SourceError(f"cannot read {self.path}: no such file")
        if chunk_size < 1:
            raise SourceError(f"chunk_size must be at least 1, got {chunk_size}")
        self._warned: set[str] = set()
        columns = self._read_columns()
        missing = [c for c in self._coercer.required_columns if c not in columns]
        if missing:
            raise SourceError(
                f"{self.path} lacks required column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} (schema {schema.name}; found: {', '.join(columns) or 'no columns'})"
            )
        self._warn_unknown(columns)

    @property
    def injected(self) -> Mapping[str, int]:
        """File sources inject no faults."""
        return {}

    def __iter__(self) -> Iterator[SourceItem]:
        for row_number, row in self.rows():
            yield self.coerce(row, row_number)

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield ``(row number, row as read)`` before coercion; iteration coerces these.

        A row that does not fit the schema does not end this iterator (it ends
        ``iter(source)``, a generator, for good): callers that skip bad rows
        read here and :meth:`coerce` each row themselves.
        """
        row_number = 0
        try:
            chunks = self._chunks()
            for chunk in chunks:
                if chunk:
                    self._warn_unknown(list(chunk[0]))
                for row in chunk:
                    row_number += 1
                    yield row_number, row
        except (OSError, ValueError) as exc:
            # pandas and pyarrow report a malformed file as ValueError subclasses
            # (ParserError, ArrowInvalid); RecordError is not one of them. Files
            # are parsed a chunk at a time, so the count of rows read is a lower
            # bound; the parser's own message names the line.
            raise SourceError(f"cannot read {self.path} (after {row_number} rows): {exc}") from exc

    def coerce(self, row: Mapping[str, Any], row_number: int) -> dict[str, Any]:
        """The record of one row of :meth:`rows`; raises :class:`RecordError` naming row and field."""
        return self._coercer.coerce(row, row_number)

    def _read_columns(self) -> list[str]:
        try:
            return [str(c) for c in self._columns()]
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot read {self.path}: {exc}") from exc

    def _warn_unknown(self, columns: list[str]) -> None:
        unknown = [c for c in self._coercer.unknown_columns(columns) if c not in self._warned]
        if unknown:
            self._warned.update(unknown)
            logger.warning(
                "%s: ignoring column%s not in schema %s: %s",
                self.path, "s" if len(unknown) > 1 else "", self.schema.name, ", ".join(unknown),
            )

    def _columns(self) -> list[str]:
        raise NotImplementedError

    def _chunks(self) -> Iterable[list[dict[str, Any]]]:
        raise NotImplementedError


class CsvSource(FileSource):
    """A CSV file with a header row; every cell is read as text and then coerced."""

    kind = "csv"

    def _columns(self) -> list[str]:
        import pandas as pd  # deferred: applications importing only EventProducer stay light

        return list(pd.read_csv(self.path, nrows=0).columns)

    def _chunks(self) -> Iterable[list[dict[str, Any]]]:
        import pandas as pd

        # dtype=str and no NA parsing: coercion, not pandas, decides what a cell
        # means, so "007" stays a string id and "" is the one spelling of missing.
        with pd.read_csv(self.path, chunksize=self.chunk_size, dtype=str, keep_default_na=False) as reader:
            for frame in reader:
                yield frame.to_dict("records")


class JsonLinesSource(FileSource):
    """A file with one JSON object per line; a missing key or null is a missing value."""

    kind = "jsonl"

    def _columns(self) -> list[str]:
        return list(self._read(nrows=1).columns)

    def _chunks(self) -> Iterable[list[dict[str, Any]]]:
        with self._read(chunksize=self.chunk_size) as reader:
            for frame in reader:
                yield frame.to_dict("records")

    def _read(self, **kwargs: Any) -> Any:
        import pandas as pd

        return pd.read_json(self.path, lines=True, dtype=False, precise_float=True, **kwargs, **_no_dates(pd))


def _no_dates(pd: Any) -> dict[str, Any]:
    """read_json options that stop date parsing, for the pandas in use.

    pandas 2 turns any column named *_time (event_time) into datetimes unless
    told not to; pandas 3 deprecates those options because dtype=False already
    keeps JSON's own types.
    """
    if int(pd.__version__.split(".")[0]) >= 3:
        return {}
    return {"convert_dates": False, "keep_default_dates": False}


class ParquetSource(FileSource):
    """A Parquet file, read one record batch at a time with pyarrow.

    pyarrow's batches keep Parquet's types and nulls exactly (pandas would turn
    an int column with nulls into floats), and stream without loading the file.
    """

    kind = "parquet"

    def _columns(self) -> list[str]:
        import pyarrow.parquet as pq

        return list(pq.read_schema(self.path).names)

    def _chunks(self) -> Iterable[list[dict[str, Any]]]:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(self.path)
        try:
            for batch in parquet.iter_batches(batch_size=self.chunk_size):
                yield batch.to_pylist()
        finally:
            parquet.close()
