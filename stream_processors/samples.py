"""Samples to infer a contract from: files and decoded records into pandas frames with nullable dtypes.

Nullable dtypes keep an int column with missing values an int column (numpy
dtypes would turn it into floats), which :mod:`stream_processors.contract_inference`
needs to infer ``int`` rather than ``double``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamml.errors import ConfigError, SourceError

if TYPE_CHECKING:
    import pandas

__all__ = ["frame_from_source", "frame_from_records", "SUFFIXES"]

#: File suffixes :func:`frame_from_source` reads.
SUFFIXES = (".csv", ".parquet", ".jsonl")


def frame_from_source(path: Path, limit: int | None) -> pandas.DataFrame:
    """Read at most ``limit`` rows of a .csv, .parquet or .jsonl file into a frame with nullable dtypes.

    Nullable dtypes keep an int column with missing values an int column
    (numpy dtypes would turn it into floats). Raises :class:`ConfigError` for
    another suffix and :class:`SourceError` for a file that cannot be read.
    """
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"cannot infer from {path}: expected a {', '.join(SUFFIXES)} file, got {suffix or 'no suffix'!r}"
        )
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    if not path.is_file():
        raise SourceError(f"cannot read {path}: no such file")
    try:
        if suffix == ".csv":
            return pd.read_csv(path, nrows=limit, dtype_backend="numpy_nullable")
        if suffix == ".jsonl":
            # dtype=False and no date parsing: JSON's own types, so event_time stays an int.
            options: dict[str, Any] = {}
            if int(pd.__version__.split(".")[0]) < 3:
                options = {"convert_dates": False, "keep_default_dates": False}
            return pd.read_json(
                path, lines=True, nrows=limit, dtype=False, dtype_backend="numpy_nullable", **options
            )
        return _read_parquet(path, limit)
    except (OSError, ValueError) as exc:
        # pandas and pyarrow report malformed files as ValueError subclasses (ParserError, ArrowInvalid).
        raise SourceError(f"cannot read {path}: {_first_line(exc)}") from exc


def frame_from_records(records: Iterable[Mapping[str, Any]]) -> pandas.DataFrame:
    """Build a frame from record dicts (decoded events), one nullable-typed column per key.

    Each column's dtype follows the Python types of its values (``pandas.array``
    inference), so an int field with nulls stays an int column. A key missing
    from a record counts as null; columns come in the order keys first appear.
    """
    import pandas as pd

    rows = list(records)
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    data = {}
    for column in names:
        values = [row.get(column) for row in rows]
        try:
            data[column] = pd.array(values)
        except (TypeError, ValueError):  # values pandas cannot infer one type for
            data[column] = pd.array(values, dtype=object)
    return pd.DataFrame(data, index=range(len(rows)))


def _read_parquet(path: Path, limit: int | None) -> pandas.DataFrame:
    """Read the first ``limit`` rows a record batch at a time, into pandas' nullable dtypes."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    try:
        batches, count = [], 0
        batch_size = min(limit, 65_536) if limit else 65_536
        for batch in parquet.iter_batches(batch_size=batch_size):
            batches.append(batch)
            count += batch.num_rows
            if limit is not None and count >= limit:
                break
        table = pa.Table.from_batches(batches, schema=parquet.schema_arrow)
    finally:
        parquet.close()
    if limit is not None:
        table = table.slice(0, limit)
    mapping = {
        pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
        pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype(),
        pa.float32(): pd.Float32Dtype(), pa.float64(): pd.Float64Dtype(), pa.string(): pd.StringDtype(),
        pa.large_string(): pd.StringDtype(),
    }
    return table.to_pandas(types_mapper=mapping.get)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
