"""``streamml score-batch``: score a file (or a range of the features topic) with one model version."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streamml.cluster import Cluster
from streamml.errors import ConfigError
from streamml.reader import parse_offsets
from streamml_cli.options import connection_options, settings_from

if TYPE_CHECKING:
    from consumers.batch_scoring import ProgressCallback

__all__ = ["COMMANDS"]

#: Longest wait for the models topic to be read and a model loaded.
_MODEL_TIMEOUT_SECONDS = 60.0


@contextmanager
def _progress(total: int | None, what: str) -> Iterator[ProgressCallback | None]:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise (pipes and logs stay clean)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from streamml_cli.options import console

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console(stderr=True), transient=True,
    ) as bar:
        task = bar.add_task(what, total=total)
        yield lambda rows: bar.advance(task, rows)


@click.command("score-batch")
@connection_options
@click.option("--input", "input_path", type=click.Path(path_type=Path), default=None,
              help="Feature vectors to score: PATH.parquet or PATH.csv, one column per feature.")
@click.option("--from-topic", is_flag=True, help="Score a range of the features topic instead of a file.")
@click.option("--from-offsets", default=None, metavar="P:O,...",
              help="With --from-topic: first offset per partition (default: the beginning).")
@click.option("--to-offsets", default=None, metavar="P:O,...",
              help="With --from-topic: offset to stop before, per partition (default: the end now).")
@click.option("--output", "output_path", type=click.Path(path_type=Path), required=True,
              help="Where to write the scored rows: PATH.parquet or PATH.csv.")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="Score with this version (verified like a subscriber does) instead of the serving one.")
@click.option("--model-name", default=None, help="Model to score with [env STREAMML_MODEL_NAME].")
@click.option("--batch-size", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Rows read and scored at a time.")
def score_batch(
    bootstrap_servers: str | None,
    namespace: str | None,
    input_path: Path | None,
    from_topic: bool,
    from_offsets: str | None,
    to_offsets: str | None,
    output_path: Path,
    version: int | None,
    model_name: str | None,
    batch_size: int,
) -> None:
    """Score feature vectors with one model version, in vectorized batches, and write them with the answers.

    Each output row keeps the input's columns (an id passes through) and gets
    model_version, prediction and, for a classifier, proba_<class>. Without
    --version the version is the one subscribers serve now (newest acceptable,
    obeying pins and rollbacks).
    """
    from consumers import batch_scoring  # deferred: keeps 'streamml --help' light

    if from_topic == (input_path is not None):
        raise ConfigError("give --input PATH or --from-topic (one of them)")
    if not from_topic and (from_offsets or to_offsets):
        raise ConfigError("--from-offsets and --to-offsets go with --from-topic")
    # Every local problem is reported before the broker is asked anything.
    batch_scoring.file_format(output_path)
    start, end = parse_offsets(from_offsets), parse_offsets(to_offsets)
    if input_path is not None:
        batch_scoring.file_format(input_path)
        if not input_path.is_file():
            raise ConfigError(f"{input_path}: no such file")

    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace, model_name=model_name)
    cluster = Cluster(settings)
    # Bounded start-up: no broker is exit 3 within STREAMML_CONNECT_TIMEOUT_SECONDS, missing topics exit 2.
    cluster.require_topics([cluster.topics.models, *([cluster.topics.features] if from_topic else [])])
    if version is None:
        serving = batch_scoring.serving_now(cluster, settings.model_name, timeout=_MODEL_TIMEOUT_SECONDS)
    else:
        serving = batch_scoring.load_version(cluster, settings.model_name, version, timeout=_MODEL_TIMEOUT_SECONDS)

    if from_topic:
        topic = cluster.topics.features
        batches = batch_scoring.read_topic_batches(cluster, topic, batch_size, start=start, end=end)
        total, what = None, f"scoring {topic}"
    else:
        assert input_path is not None
        batches = batch_scoring.read_file_batches(input_path, batch_size)
        total, what = batch_scoring.file_rows(input_path), f"scoring {input_path.name}"
    with _progress(total, what) as on_progress:
        report = batch_scoring.score_batches(serving, batches, output_path, on_progress=on_progress)
    click.echo(report.summary())


COMMANDS = [score_batch]
