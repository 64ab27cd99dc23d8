"""Score a file, or a range of the features topic, with one model version, in vectorized batches.

The library part of ``streamml score-batch`` (no click here): an app may call
it too. One version scores the whole run, so every output row says which
version answered (``model_version``). That version is either what a
:class:`~consumers.subscriber.ModelSubscriber` would serve now
(:func:`serving_now`: newest acceptable, obeying signed pins and rollbacks,
through the subscriber's own catch-up) or a pinned one
(:func:`load_version`: checked by :mod:`streamml.trust` exactly as the
subscriber checks it, signature and checksum before the payload is
deserialized, then the golden examples replayed).

Rows are scored a batch at a time (:func:`score_frame`):

* a scikit-learn model (:class:`~streamml.sklearn_format.SklearnModel`)
  predicts on the whole batch's array, columns in the order it was fit with;
* a river model predicts with ``predict_many``/``predict_proba_many`` when it
  has them (linear models, and pipelines whose every other step has
  ``transform_many``);
* any other model, one row at a time.

Every path gives the answers serving gives for the same row (numbers to
the last bits of a float: numpy adds in another order than Python). Missing values
follow the serving rule: an empty cell is an absent feature. A scikit-learn
model takes an absent one-hot feature (``field=value``) as 0.0; a river
model never sees the key, as in a request without it, so a river batch
with an empty cell in a feature column is scored row by row (a 0.0 would
not be the same input to a scaler). A feature every input of the model had
(:class:`~consumers.swap.FeatureContract`) that is missing, as a column or in
a row, is a :class:`~streamml.errors.ConfigError` naming it.

Output rows keep every input column, then ``model_version``,
``prediction`` and, for a classifier, ``proba_<class>`` per class.
pandas and pyarrow are imported only when these functions run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumers.subscriber import ModelSubscriber
from consumers.swap import FeatureContract, ServingModel
from streamml.cluster import Cluster
from streamml.envelope import probability_method
from streamml.errors import ConfigError, DecodeError, EnvelopeError, KafkaClientError, ModelNotReadyError
from streamml.kafka import record_headers
from streamml.reader import read_to_end
from streamml.records import FeatureVector, RecordCodec
from streamml.registry import read_history
from streamml.trust import TrustPolicy, load_model

if TYPE_CHECKING:
    import pandas

__all__ = [
    "FORMATS",
    "BatchReport",
    "file_format",
    "serving_now",
    "load_version",
    "read_file_batches",
    "read_topic_batches",
    "score_frame",
    "BatchWriter",
    "score_batches",
]

logger = logging.getLogger(__name__)

#: File formats read and written, by suffix.
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
#: Columns every output row gets (besides ``proba_<class>``).
VERSION_COLUMN = "model_version"
PREDICTION_COLUMN = "prediction"
PROBA_PREFIX = "proba_"
#: Columns a row read from the features topic carries besides its features.
TOPIC_COLUMNS = ("partition", "offset", "key", "event_id", "event_time", "label")

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class BatchReport:
    """What one run scored: rows, with which version, how long it took, where it went."""

    rows: int
    version: int
    seconds: float
    output: Path
    #: Rows scored by a batch method (the rest one at a time).
    batched_rows: int

    def summary(self) -> str:
        """The one line ``streamml score-batch`` prints."""
        return f"scored {self.rows} rows with v{self.version} in {self.seconds:.1f}s -> {self.output}"


# -- inputs ------------------------------------------------------------------------------


def file_format(path: Path) -> str:
    """``"parquet"`` or ``"csv"`` from the file's suffix; :class:`ConfigError` for any other."""
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise ConfigError(f"{path}: unknown format {path.suffix or '(no suffix)'!r}; use .parquet or .csv")
    return found


def read_file_batches(path: Path, batch_size: int) -> Iterator[pandas.DataFrame]:
    """Yield ``path`` (CSV or Parquet) as DataFrames of at most ``batch_size`` rows.

    Read a batch at a time, so memory follows the batch size, not the file.
    Raises :class:`ConfigError` for a missing or unreadable file (the reason
    names the file).
    """
    fmt = file_format(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        if fmt == "csv":
            import pandas

            reader = pandas.read_csv(path, chunksize=batch_size)
            with reader:
                yield from reader
        else:
            import pyarrow.parquet

            parquet = pyarrow.parquet.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=batch_size):
                yield batch.to_pandas()
    except ConfigError:
        raise
    except Exception as exc:  # pandas and pyarrow raise many kinds for a file they cannot parse
        raise ConfigError(f"{path}: cannot read it as {fmt}: {type(exc).__name__}: {exc}") from exc


def file_rows(path: Path) -> int | None:
    """Rows in ``path`` when the format says without reading it (Parquet), else ``None``."""
    if file_format(path) != "parquet":
        return None
    import pyarrow.parquet

    try:
        rows: int = pyarrow.parquet.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001 - only a progress total; reading reports the real problem
        return None
    return rows


def topic_range(
    cluster: Cluster, topic: str, start: Mapping[int, int] | None, end: Mapping[int, int] | None
) -> list[int]:
    """The partitions of ``topic``; :class:`ConfigError` when an offset names a partition it does not have."""
    parts = cluster.partitions(topic)
    for name, given in (("--from-offsets", start), ("--to-offsets", end)):
        unknown = sorted(set(given or {}) - set(parts))
        if unknown:
            raise ConfigError(f"{name} names partitions {unknown} that {topic} does not have (it has {parts})")
    return parts


def read_topic_batches(
    cluster: Cluster,
    topic: str,
    batch_size: int,
    *,
    start: Mapping[int, int] | None = None,
    end: Mapping[int, int] | None = None,
    timeout: float = 120.0,
) -> Iterator[pandas.DataFrame]:
    """Yield the feature records of ``topic`` from ``start`` to ``end`` as DataFrames of ``batch_size`` rows.

    ``start`` defaults to each partition's beginning, ``end`` (exclusive) to
    its high watermark when reading starts (:func:`streamml.reader.read_to_end`).
    Columns: :data:`TOPIC_COLUMNS`, then every feature (empty where a record
    does not have it, which is how the processor leaves out a one-hot
    category). Undecodable records are logged with their position and
    skipped. This is a minimal reader on purpose: the features snapshot of
    batch training (``model_publisher.snapshot``) keeps labelled rows only,
    and a consumer may not import the model publisher.
    """
    import pandas

    topic_range(cluster, topic, start, end)
    codec = RecordCodec(FeatureVector)
    stop_at = dict(end or {})
    rows: list[dict[str, Any]] = []
    for message in read_to_end(cluster, topic, start=dict(start or {}), timeout=timeout):
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None  # set on every consumed record
        if partition in stop_at and offset >= stop_at[partition]:
            continue  # past the range; read_to_end stops at the end of the topic
        try:
            record = codec.decode(message.value(), record_headers(message))
        except DecodeError as exc:
            logger.warning("skipping undecodable feature record %s[%d]@%d: %s", topic, partition, offset, exc)
            continue
        row: dict[str, Any] = {
            "partition": partition, "offset": offset, "key": record.key, "event_id": record.event_id,
            "event_time": record.event_time, "label": record.label,
        }
        row.update(record.features)
        rows.append(row)
        if len(rows) >= batch_size:
            yield pandas.DataFrame(rows)
            rows = []
    if rows:
        yield pandas.DataFrame(rows)


# -- the model ---------------------------------------------------------------------------


def serving_now(cluster: Cluster, model_name: str | None = None, *, timeout: float = 30.0) -> ServingModel:
    """The version a :class:`ModelSubscriber` serves now, loaded by one (its catch-up, its rules).

    The subscriber reads the models topic to its end, loads what it says to
    serve and is stopped again: no thread is left behind. Raises
    :class:`ModelNotReadyError` when the topic holds no version this process
    accepts (with the refusals), :class:`KafkaClientError` when the topic
    cannot be read within ``timeout``.
    """
    subscriber = ModelSubscriber(cluster, model_name=model_name)
    subscriber.start()
    try:
        deadline = time.monotonic() + timeout
        caught_up = subscriber.wait_caught_up(timeout)
        # The first model is installed before the catch-up is marked done;
        # waiting for ready too covers a thread still between the two.
        ready = subscriber.wait_ready(max(0.0, deadline - time.monotonic())) if caught_up else subscriber.ready
        if not ready:
            if not caught_up:
                why = f": {subscriber.last_error}" if subscriber.last_error else ""
                raise KafkaClientError(f"could not read {subscriber.topic} to its end within {timeout:g}s{why}")
            refused = subscriber.refused
            why = f"; refused: {refused[-1].reason}" if refused else ""
            raise ModelNotReadyError(
                f"no version of {subscriber.model_name!r} on {subscriber.topic} can be served{why}"
            )
        return subscriber.current()
    finally:
        subscriber.stop()


def load_version(cluster: Cluster, model_name: str, version: int, *, timeout: float = 30.0) -> ServingModel:
    """Load ``model_name`` v``version`` from the models topic, verified as a subscriber verifies it.

    The envelope is assessed (:func:`streamml.trust.assess`, through
    :func:`streamml.registry.read_history`: signature, checksum, runtime, the
    quality gate's verdict) before its payload is touched, then loaded with
    :func:`streamml.trust.load_model` (restricted deserialization, golden
    examples). Raises :class:`ConfigError` for an unknown model or version
    and :class:`EnvelopeError` with the reason for a refused one.
    """
    history = read_history(cluster, policy=TrustPolicy.from_settings(cluster.settings), timeout=timeout)
    topic = cluster.topics.models
    history.require_model(model_name, topic)
    found = [r for r in history.versions if r.model_name == model_name and r.version == version]
    if not found:
        known = ", ".join(
            f"v{r.version}" for r in history.versions if r.model_name == model_name and r.version is not None
        )
        raise ConfigError(f"{model_name} has no version {version} on {topic} (versions: {known})")
    record = found[-1]  # a later record of the same version replaces an earlier one, as in the subscriber
    if record.verdict is None or record.envelope is None or record.reason is not None:
        raise EnvelopeError(f"{model_name} v{version} is refused: {record.reason}")
    model = load_model(record.verdict)
    return ServingModel(model, version, record.envelope.summary(), "pinned", FeatureContract.of(record.envelope))


# -- scoring -----------------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value serving would return (``numpy.bool_`` -> ``bool``)."""
    item = getattr(value, "item", None)
    return item() if callable(item) and type(value).__module__ == "numpy" else value


def _feature_columns(serving: ServingModel, frame: pandas.DataFrame) -> list[str]:
    """The columns of ``frame`` that are features of the model; the rest pass through."""
    known = serving.inputs.known
    if known:
        return [c for c in frame.columns if c in known]
    # The envelope names no features (an online model published without them):
    # every numeric column is one, except those a topic read adds.
    import pandas

    return [
        c for c in frame.columns
        if c not in TOPIC_COLUMNS and pandas.api.types.is_numeric_dtype(frame[c]) and not frame[c].dtype == bool
    ]


def _check_required(serving: ServingModel, frame: pandas.DataFrame, features: list[str]) -> None:
    """:class:`ConfigError` naming a required feature that is not a column, or is empty in a row."""
    required = serving.inputs.required
    name = f"v{serving.version}"
    absent = sorted(required - set(frame.columns))
    if absent:
        raise ConfigError(
            f"input has no column {', '.join(absent)}: {name} needs it in every row "
            f"(it learned from: {', '.join(sorted(serving.inputs.known))})"
        )
    for column in features:
        if column in required:
            empty = frame[column].isna()
            if empty.any():
                row = int(empty.to_numpy().nonzero()[0][0])
                raise ConfigError(f"column {column!r} is empty in row {_row_number(frame, row)}: {name} needs it")


def _row_number(frame: pandas.DataFrame, position: int) -> int:
    """The 1-based row number in the whole input of a batch's row (batches keep their running index)."""
    label = frame.index[position]
    return int(label) + 1 if isinstance(label, int) else position + 1


def _numeric(frame: pandas.DataFrame, features: list[str]) -> pandas.DataFrame:
    """The feature columns as floats; :class:`ConfigError` naming a column that is not numeric."""
    import pandas

    out = {}
    for column in features:
        try:
            out[column] = pandas.to_numeric(frame[column], errors="raise").astype("float64")
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"column {column!r} is a feature but not numeric: {exc}") from exc
    return pandas.DataFrame(out, index=frame.index)


def _river_batch_methods(model: Any, classifier: bool) -> bool:
    """Whether a river model scores a DataFrame itself: ``predict_many`` (and ``predict_proba_many``).

    A river pipeline has both methods whatever its steps, and raises unless
    every step before the last has ``transform_many``: the steps tell.
    """
    steps = getattr(model, "steps", None)
    final = getattr(model, "_last_step", model)
    wanted = ("predict_many", "predict_proba_many") if classifier else ("predict_many",)
    if not all(callable(getattr(final, method, None)) for method in wanted):
        return False
    if isinstance(steps, Mapping):
        before = list(steps.values())[:-1]
        return all(callable(getattr(step, "transform_many", None)) for step in before)
    return True


@dataclass
class _Scored:
    predictions: list[Any]
    probabilities: list[dict[Any, float]]
    batched: int


def _score_sklearn(model: Any, X: pandas.DataFrame, classifier: bool) -> _Scored:
    from streamml.sklearn_format import one_hot

    # What SklearnModel does for one row, for the whole batch: every column it
    # was fit on, in order; an absent or empty one-hot feature is 0.0 (required
    # ones were checked before).
    ordered = X.reindex(columns=list(model.feature_names))
    for name in model.feature_names:
        if one_hot(name):
            ordered[name] = ordered[name].fillna(0.0)
    estimator = model.estimator
    predictions = [_plain(v) for v in estimator.predict(ordered)]
    probabilities: list[dict[Any, float]] = [{} for _ in predictions]
    if classifier and hasattr(estimator, "predict_proba"):
        classes = [_plain(c) for c in estimator.classes_]
        probabilities = [
            {label: float(p) for label, p in zip(classes, row, strict=True)} for row in estimator.predict_proba(ordered)
        ]
    return _Scored(predictions, probabilities, len(predictions))


def _score_rows(serving: ServingModel, X: pandas.DataFrame, classifier: bool) -> _Scored:
    predictions: list[Any] = []
    probabilities: list[dict[Any, float]] = []
    for row in X.to_dict("records"):
        x = {k: v for k, v in row.items() if not _is_missing(v)}  # an empty cell is an absent feature
        predictions.append(serving.predict_one(x))
        probabilities.append(serving.predict_proba_one(x) if classifier else {})
    return _Scored(predictions, probabilities, 0)


def _score_river(serving: ServingModel, X: pandas.DataFrame, classifier: bool) -> _Scored:
    model = serving.model
    complete = ~X.isna().any(axis=1)
    if not _river_batch_methods(model, classifier) or not complete.any():
        return _score_rows(serving, X, classifier)
    batch = X[complete]
    predictions = [_plain(v) for v in model.predict_many(batch)]
    probabilities: list[dict[Any, float]] = [{} for _ in predictions]
    if classifier:
        proba = model.predict_proba_many(batch)
        probabilities = [
            {_plain(label): float(p) for label, p in row.items()} for row in proba.to_dict("records")
        ]
    if complete.all():
        return _Scored(predictions, probabilities, len(predictions))
    # Rows with an empty feature cell: one at a time, so the model never sees the key.
    rest = _score_rows(serving, X[~complete], classifier)
    ordered_p: list[Any] = []
    ordered_q: list[dict[Any, float]] = []
    batched, single = iter(zip(predictions, probabilities, strict=True)), iter(
        zip(rest.predictions, rest.probabilities, strict=True)
    )
    for is_complete in complete.to_numpy():
        p, q = next(batched) if is_complete else next(single)
        ordered_p.append(p)
        ordered_q.append(q)
    return _Scored(ordered_p, ordered_q, len(predictions))


def score_frame(serving: ServingModel, frame: pandas.DataFrame) -> tuple[pandas.DataFrame, int]:
    """Score every row of ``frame`` with ``serving``; return the output rows and how many were batch-scored.

    The output is ``frame`` (every column, same index) with ``model_version``,
    ``prediction`` and ``proba_<class>`` columns added. Raises
    :class:`ConfigError` for a missing required feature (column or cell) or a
    feature column that is not numeric.
    """
    from streamml.sklearn_format import SklearnModel

    features = _feature_columns(serving, frame)
    _check_required(serving, frame, features)
    X = _numeric(frame, features)
    model = serving.model
    classifier = probability_method(model) is not None
    if isinstance(model, SklearnModel):
        classifier = classifier and hasattr(model.estimator, "predict_proba")
        scored = _score_sklearn(model, X, classifier)
    else:
        scored = _score_river(serving, X, classifier)
    out = frame.copy()
    out[VERSION_COLUMN] = serving.version
    out[PREDICTION_COLUMN] = scored.predictions
    classes = list(dict.fromkeys(label for row in scored.probabilities for label in row))
    for label in sorted(classes, key=str):
        out[f"{PROBA_PREFIX}{label}"] = [row.get(label, 0.0) for row in scored.probabilities]
    return out, scored.batched


# -- output ------------------------------------------------------------------------------


class BatchWriter:
    """Writes scored batches to a CSV or Parquet file, as they come.

    CSV is appended batch by batch. Parquet batches are kept and written as
    one table when the writer closes, so column types can be unified across
    batches (a CSV column may read as integers in one batch and floats in
    the next): memory follows the output, not the batch. The file appears
    only when :meth:`close` succeeds (written next to it, then renamed), so a
    failed run never leaves half a result under the output name.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.format = file_format(path)
        if not path.parent.is_dir():
            raise ConfigError(f"{path}: the folder {path.parent} does not exist")
        self._partial = path.with_name(f".{path.name}.partial")
        self._tables: list[Any] = []
        self._header = True

    def write(self, frame: pandas.DataFrame) -> None:
        if self.format == "csv":
            frame.to_csv(self._partial, mode="w" if self._header else "a", header=self._header, index=False)
            self._header = False
        else:
            import pyarrow

            self._tables.append(pyarrow.Table.from_pandas(frame, preserve_index=False))

    def close(self) -> None:
        """Finish the file and move it to its name."""
        if self.format == "parquet":
            import pyarrow
            import pyarrow.parquet

            table = pyarrow.concat_tables(self._tables, promote_options="permissive") if self._tables else None
            if table is None:
                table = pyarrow.table({})
            pyarrow.parquet.write_table(table, self._partial)
        elif self._header:  # nothing written: an empty file, not a missing one
            self._partial.write_text("")
        self._partial.replace(self.path)

    def discard(self) -> None:
        """Drop what was written (the run failed)."""
        self._tables.clear()
        self._partial.unlink(missing_ok=True)


def score_batches(
    serving: ServingModel,
    batches: Iterable[pandas.DataFrame],
    output: Path,
    *,
    on_progress: ProgressCallback | None = None,
) -> BatchReport:
    """Score every batch with ``serving`` and write the rows to ``output``; return the report.

    ``on_progress(rows)`` is called after each batch with the rows it held.
    Batches keep a running index (row numbers in errors are the input's).
    """
    started = time.monotonic()
    writer = BatchWriter(output)
    rows = batched = 0
    try:
        for batch in batches:
            frame = batch.set_axis(range(rows, rows + len(batch)), axis=0)
            scored, n_batched = score_frame(serving, frame)
            writer.write(scored)
            rows += len(frame)
            batched += n_batched
            if on_progress is not None:
                on_progress(len(frame))
        writer.close()
    except BaseException:
        writer.discard()
        raise
    return BatchReport(rows, serving.version, time.monotonic() - started, output, batched)
