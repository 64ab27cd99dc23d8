"""The learner's metrics: counts read from its report, one update per published version (no broker)."""

from __future__ import annotations

from model_publisher import catalog
from model_publisher.learning_loop import LearnReport
from model_publisher.metrics import METRIC_NAMES, LearnerMetrics
from streamml.envelope import seal
from tests.unit.test_metrics_http import samples


def _envelope(version: int, accuracy: float):  # type: ignore[no-untyped-def]
    return seal(
        catalog.build("logistic"), model_name="m", version=version, flavor=catalog.FLAVOR,
        metrics={"accuracy": accuracy, "n_learned": 100.0 * version}, n_learned=100 * version,
    )


def test_event_counts_are_the_reports_at_scrape_time() -> None:
    report = LearnReport()
    metrics = LearnerMetrics()
    metrics.watch(report)
    metrics.watch(report)  # once: a second watch must not register the collector twice
    report.consumed, report.learned, report.skipped, report.refused, report.duplicates = 120, 100, 3, 2, 15
    got = samples(metrics.registry)
    assert got[("streamml_learner_events_consumed_total", ())] == 120
    assert got[("streamml_learner_events_learned_total", ())] == 100
    not_learned = "streamml_learner_events_not_learned_total"
    assert got[(not_learned, (("reason", "unlearnable"),))] == 3
    assert got[(not_learned, (("reason", "model_output"),))] == 2
    assert got[(not_learned, (("reason", "duplicate"),))] == 15


def test_each_publish_sets_version_metrics_size_and_counts_the_decision() -> None:
    metrics = LearnerMetrics()
    first, second, third = _envelope(1, 0.7), _envelope(2, 0.8), _envelope(3, 0.6)
    metrics.published(first, 0.02, promoted=None)
    metrics.published(second, 0.03, promoted=True)
    metrics.published(third, 0.04, promoted=False)
    got = samples(metrics.registry)
    published = "streamml_learner_versions_published_total"
    for decision in ("ungated", "promoted", "held_back"):
        assert got[(published, (("decision", decision), ("model", "m")))] == 1
    assert got[("streamml_learner_model_version", (("model", "m"),))] == 3
    assert got[("streamml_learner_model_metric", (("metric", "accuracy"), ("model", "m")))] == 0.6
    assert got[("streamml_learner_model_bytes", (("model", "m"),))] == third.payload_size > 0
    assert got[("streamml_learner_publish_seconds_count", ())] == 3
    assert abs(got[("streamml_learner_publish_seconds_sum", ())] - 0.09) < 1e-9


def test_every_sample_of_a_scrape_is_in_metric_names() -> None:
    metrics = LearnerMetrics()
    metrics.watch(LearnReport())
    metrics.published(_envelope(1, 0.5), 0.01, promoted=True)
    scraped = {name for name, _ in samples(metrics.registry)}
    assert scraped <= set(METRIC_NAMES), sorted(scraped - set(METRIC_NAMES))
