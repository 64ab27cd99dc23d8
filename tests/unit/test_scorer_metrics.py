"""The stream scorer's metrics: the report's counts, batch latency, the model state serve also exports (no broker)."""

from __future__ import annotations

from consumers.scorer import ScoreReport
from consumers.scorer_metrics import METRIC_NAMES, ScorerMetrics
from consumers.serving_metrics import METRIC_NAMES as SERVE_NAMES
from consumers.swap import ModelSlot
from tests.unit.test_http_service import POLICY, sealed
from tests.unit.test_metrics_http import samples


def test_counts_latency_and_the_model_state() -> None:
    slot = ModelSlot("m", POLICY)
    report = ScoreReport()
    metrics = ScorerMetrics()
    metrics.watch(report, slot)
    before = samples(metrics.registry)
    assert before[("streamml_model_ready", ())] == 0
    assert ("streamml_model_version", (("model", "m"),)) not in before
    assert slot.offer(sealed(0.5, 1)) and slot.offer(sealed(0.4, 2))
    slot.offer(sealed(0.3, 1))  # not newer: refused
    report.scored, report.skipped = 480, 2
    metrics.observe_batch(482, 0.012)
    metrics.observe_batch(10, 0.002)
    got = samples(metrics.registry)
    assert got[("streamml_scorer_predictions_total", ())] == 480
    assert got[("streamml_scorer_skipped_total", ())] == 2
    assert got[("streamml_scorer_batch_seconds_count", ())] == 2
    assert got[("streamml_scorer_batch_size_sum", ())] == 492
    assert got[("streamml_model_ready", ())] == 1 and got[("streamml_model_version", (("model", "m"),))] == 2
    assert got[("streamml_model_swaps_total", ())] == 2
    assert got[("streamml_model_refused_total", (("reason", "not_newer"),))] == 1
    assert got[("streamml_scorer_swap_seconds_count", ())] == 2  # each swap's load time
    load = got[("streamml_model_load_seconds", (("model", "m"),))]
    assert load == slot.current().load_seconds > 0


def test_every_sample_of_a_scrape_is_in_metric_names_and_serve_shares_the_model_names() -> None:
    slot = ModelSlot("m", POLICY)
    metrics = ScorerMetrics()
    metrics.watch(ScoreReport(), slot)
    slot.offer(sealed(0.5, 1))
    slot.offer(sealed(0.5, 1))
    metrics.observe_batch(1, 0.001)
    scraped = {name for name, _ in samples(metrics.registry)}
    assert scraped <= set(METRIC_NAMES), sorted(scraped - set(METRIC_NAMES))
    model_names = {n for n in scraped if n.startswith("streamml_model_")}
    assert model_names and model_names <= set(SERVE_NAMES)
