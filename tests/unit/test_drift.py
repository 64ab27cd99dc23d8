"""Drift scores, references, the distribution monitor and monitoring records (pure, no broker)."""

from __future__ import annotations

import json
import logging
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from stream_processors.drift import UNSEEN, DistributionMonitor, categorical_scores, numeric_scores, psi
from stream_processors.profiles import (
    MAX_CATEGORIES,
    QUANTILE_POINTS,
    CategoricalReference,
    NumericReference,
    Reference,
    WindowSample,
    categorical_reference,
    numeric_reference,
)
from streamml.errors import RecordError, SchemaError
from streamml.monitoring import (
    FORMAT,
    PROFILE,
    REFERENCE,
    Alert,
    MonitoringRecord,
    decode_record,
    encode_record,
    latest_by_source,
)
from streamml.serde import AvroSchema, FieldRule

DRIFT_LOGGER = "stream_processors.drift"
COLOURS = ("red", "green", "blue")
NOW = 1_700_000_000.0


def _clock() -> float:
    return NOW


def _empirical_cdf(sample: list[float], x: np.ndarray) -> np.ndarray:
    ordered = np.sort(np.asarray(sample, dtype=float))
    return np.searchsorted(ordered, x, side="right") / len(ordered)


def _gauss(rng: random.Random, n: int, mean: float = 0.0) -> list[float]:
    return [rng.gauss(mean, 1.0) for _ in range(n)]


def _ints(rng: random.Random, n: int) -> list[int]:
    return [rng.randint(1, 20) for _ in range(n)]


def _events(rng: random.Random, shift_at: int | None = None, shift: float = 3.0) -> Iterator[dict[str, Any]]:
    """An endless stream: ``x`` standard normal (mean ``shift`` from event ``shift_at`` on), ``colour`` uniform."""
    i = 0
    while True:
        mean = shift if shift_at is not None and i >= shift_at else 0.0
        yield {"x": rng.gauss(mean, 1.0), "colour": rng.choice(COLOURS)}
        i += 1


def _monitor(**kwargs: Any) -> DistributionMonitor:
    options: dict[str, Any] = {
        "stream": "events", "source": "proc@host:1", "numeric": ["x"], "categorical": ["colour"],
        "reference_events": 1000, "window_events": 500, "clock": _clock,
    }
    options.update(kwargs)
    return DistributionMonitor(**options)


def _feed(monitor: DistributionMonitor, events: Iterator[dict[str, Any]], n: int, start_ms: int = 0) -> None:
    for i in range(n):
        monitor.observe(next(events), start_ms + i)


def _profiles(records: list[MonitoringRecord]) -> list[MonitoringRecord]:
    return [r for r in records if r.kind == PROFILE]


# --- references and their distribution function -------------------------------------------------------------------


def test_quantiles_are_values_of_the_sample() -> None:
    rng = random.Random(1)
    sample = _gauss(rng, 1000)
    ref = numeric_reference(sample, nulls=0)
    assert ref is not None
    assert len(ref.quantiles) == QUANTILE_POINTS
    assert set(ref.quantiles) <= set(sample)  # inverted_cdf: no interpolation between values
    assert ref.quantiles[0] == min(sample) and ref.quantiles[-1] == max(sample)
    assert list(ref.quantiles) == sorted(ref.quantiles)
    assert ref.count == 1000 and ref.null_rate == 0.0
    assert ref.mean == pytest.approx(statistics.fmean(sample))
    assert ref.std == pytest.approx(statistics.stdev(sample))


def test_numeric_reference_of_no_values_is_none_and_null_rate_counts_nulls() -> None:
    assert numeric_reference([], nulls=5) is None
    ref = numeric_reference([1.0, 2.0, 3.0], nulls=1)
    assert ref is not None and ref.null_rate == pytest.approx(0.25) and ref.count == 3


def test_cdf_is_within_one_percent_of_the_empirical_cdf_on_a_continuous_sample() -> None:
    rng = random.Random(2)
    sample = _gauss(rng, 1000)
    ref = numeric_reference(sample, nulls=0)
    assert ref is not None
    points = np.concatenate((np.asarray(sample), np.linspace(-5.0, 5.0, 2001)))
    gap = np.abs(ref.cdf(points) - _empirical_cdf(sample, points))
    assert float(gap.max()) <= 0.01 + 1e-9
    assert ref.cdf(np.asarray([min(sample) - 1.0]))[0] == 0.0
    assert ref.cdf(np.asarray([max(sample)]))[0] == 1.0


def test_cdf_keeps_the_plateaus_of_a_discrete_sample_and_is_right_continuous() -> None:
    rng = random.Random(3)
    sample = [float(v) for v in _ints(rng, 1000)]
    ref = numeric_reference(sample, nulls=0)
    assert ref is not None
    assert set(ref.quantiles) <= set(range(1, 21))
    values = np.arange(1.0, 21.0)
    at = ref.cdf(values)
    assert np.all(np.abs(at - _empirical_cdf(sample, values)) <= 0.01 + 1e-9)
    # Flat between the integers, and the jump belongs to the value itself (right-continuous).
    assert np.array_equal(ref.cdf(values + 0.5), at)
    assert np.array_equal(ref.cdf(values + 0.999), at)
    just_below = ref.cdf(values - 1e-9)
    assert np.array_equal(just_below[1:], at[:-1])
    assert just_below[0] == 0.0
    assert np.all(at > just_below)  # every value holds about 5 % of the sample, more than the 1 % resolution
    assert at[-1] == 1.0


def test_reference_round_trips_through_as_fields_and_json() -> None:
    rng = random.Random(4)
    sample = WindowSample(numeric=("x", "n"), categorical=("colour", "flag"))
    for i in range(300):
        sample.add({"x": rng.gauss(0, 1), "n": rng.randint(1, 20) if i % 10 else None,
                    "colour": rng.choice(COLOURS), "flag": rng.random() < 0.3}, i)
    ref = sample.reference()
    assert set(ref.fields) == {"x", "n", "colour", "flag"}
    assert isinstance(ref.fields["flag"], CategoricalReference)
    assert set(ref.fields["flag"].shares) == {"true", "false"}
    assert ref.fields["n"].null_rate == pytest.approx(0.1)
    raw = json.loads(json.dumps(ref.as_fields()))
    assert Reference.from_fields(raw, events=ref.events, origin=ref.origin) == ref


def _numeric_entry() -> dict[str, Any]:
    ref = numeric_reference([float(v) for v in range(1000)], nulls=0)
    assert ref is not None
    return ref.as_dict()


@pytest.mark.parametrize(
    "broken",
    [
        {"quantiles": list(range(100))},
        {"quantiles": list(range(102))},
        {"quantiles": [*range(100), -1]},
        {"kind": "text"},
    ],
    ids=["100-quantiles", "102-quantiles", "unsorted", "unknown-kind"],
)
def test_reference_from_fields_refuses_malformed_entries(broken: dict[str, Any]) -> None:
    entry = {**_numeric_entry(), **broken}
    with pytest.raises(ValueError):
        Reference.from_fields({"x": entry}, events=1000, origin="first events")


def test_high_cardinality_reference_keeps_only_the_top_categories() -> None:
    counts = Counter({f"id{i}": 1 + (i < 10) for i in range(MAX_CATEGORIES + 10)})
    ref = categorical_reference(counts, nulls=0)
    assert ref is not None and ref.high_cardinality
    assert len(ref.shares) == MAX_CATEGORIES
    assert {f"id{i}" for i in range(10)} <= set(ref.shares)
    small = categorical_reference(Counter({f"c{i}": 1 for i in range(MAX_CATEGORIES)}), nulls=0)
    assert small is not None and not small.high_cardinality
    assert categorical_reference(Counter(), nulls=3) is None


# --- PSI --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shares", [[1.0], [0.5, 0.5], [0.1, 0.2, 0.3, 0.4], [0.0, 0.25, 0.75]])
def test_psi_of_identical_shares_is_zero(shares: list[float]) -> None:
    assert psi(shares, shares) == 0.0


def test_psi_is_positive_symmetric_and_grows_with_the_shift() -> None:
    base = [0.25, 0.25, 0.25, 0.25]
    near = [0.3, 0.2, 0.25, 0.25]
    far = [0.7, 0.1, 0.1, 0.1]
    assert psi(base, near) > 0.0
    assert psi(base, near) == pytest.approx(psi(near, base))
    assert psi(base, far) == pytest.approx(psi(far, base))
    assert psi(base, far) > psi(base, near)
    expected = sum((a - e) * math.log(a / e) for e, a in zip(base, near, strict=True))
    assert psi(base, near) == pytest.approx(expected)


def test_psi_is_finite_with_empty_bins() -> None:
    value = psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2])
    assert math.isfinite(value)
    floor = 1e-4
    expected = 2 * (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.2 - floor) * math.log(0.2 / floor)
    assert value == pytest.approx(expected)
    assert math.isfinite(psi([1.0, 0.0], [0.0, 1.0]))
    assert psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0  # both empty: no contribution


# --- numeric scores ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gaussian", "ints"])
def test_numeric_scores_on_a_stationary_stream_stay_quiet(kind: str) -> None:
    rng = random.Random(5)
    draw: Callable[[int], list[float]]
    if kind == "gaussian":
        def draw(n: int) -> list[float]:
            return _gauss(rng, n)
    else:
        def draw(n: int) -> list[float]:
            return [float(v) for v in _ints(rng, n)]
    ref = numeric_reference(draw(1000), nulls=0)
    assert ref is not None
    scores = [numeric_scores(ref, draw(500)) for _ in range(40)]
    psis = [s["psi"] for s in scores]
    pvalues = [s["ks_pvalue"] for s in scores]
    assert all(p is not None and 0.0 <= p < 0.1 for p in psis), max(p or 0.0 for p in psis)
    assert all(p is not None and 0.0 <= p <= 1.0 for p in pvalues)
    assert statistics.median(p or 0.0 for p in pvalues) > 0.1
    assert sum(1 for p in pvalues if p is not None and p < 1e-3) <= 2


def test_numeric_scores_flag_a_half_sd_shift_of_a_gaussian() -> None:
    rng = random.Random(6)
    ref = numeric_reference(_gauss(rng, 1000), nulls=0)
    assert ref is not None
    scores = [numeric_scores(ref, _gauss(rng, 500, mean=0.5)) for _ in range(40)]
    psis = [s["psi"] or 0.0 for s in scores]
    # The expected decile PSI of a 0.5 sd shift is about 0.24, so single windows scatter around 0.2.
    assert statistics.median(psis) > 0.2
    assert min(psis) > 0.1
    assert all(s["ks_pvalue"] is not None and s["ks_pvalue"] < 1e-6 for s in scores)
    assert all(s["ks_statistic"] is not None and s["ks_statistic"] > 0.1 for s in scores)


def test_numeric_scores_flag_ints_mapped_to_their_first_digit() -> None:
    rng = random.Random(7)
    ref = numeric_reference([float(v) for v in _ints(rng, 1000)], nulls=0)
    assert ref is not None
    for _ in range(10):
        window = [float(int(str(v)[0])) for v in _ints(rng, 500)]
        scores = numeric_scores(ref, window)
        assert scores["psi"] is not None and scores["psi"] > 0.2
        assert scores["ks_pvalue"] is not None and scores["ks_pvalue"] < 1e-6
        # Half the window is 1 where the reference has about 5 %.
        assert scores["ks_statistic"] == pytest.approx(0.5, abs=0.1)


def test_numeric_scores_of_an_empty_window_are_none() -> None:
    ref = numeric_reference([1.0, 2.0, 3.0], nulls=0)
    assert ref is not None
    assert numeric_scores(ref, []) == {"psi": None, "ks_statistic": None, "ks_pvalue": None}


def test_numeric_scores_of_a_window_equal_to_the_reference() -> None:
    sample = [float(v) for v in range(1000)]
    ref = numeric_reference(sample, nulls=0)
    assert ref is not None
    scores = numeric_scores(ref, sample)
    # Not exactly 0: numpy's float percents put a few quantiles one value past the exact one.
    assert scores["psi"] == pytest.approx(0.0, abs=1e-3)
    assert scores["ks_statistic"] is not None and scores["ks_statistic"] <= 0.01 + 1e-9
    assert scores["ks_pvalue"] is not None and scores["ks_pvalue"] > 0.99


# --- categorical scores -----------------------------------------------------------------------------------------


def _categorical(shares: dict[str, float]) -> CategoricalReference:
    return CategoricalReference(shares=shares, count=1000, null_rate=0.0)


def test_categorical_scores_shares_top_and_mode() -> None:
    ref = _categorical({"a": 0.5, "b": 0.3, "c": 0.2})
    scores = categorical_scores(ref, Counter({"a": 50, "b": 30, "c": 20}))
    assert scores["top"] == [["a", 0.5], ["b", 0.3], ["c", 0.2]]
    assert scores["mode"] == "a"
    assert scores["max_share"] == 0.5
    assert scores["unseen_share"] == 0.0
    assert scores["psi"] == pytest.approx(0.0, abs=1e-12)
    assert scores["js_distance"] == pytest.approx(0.0, abs=1e-12)


def test_categorical_scores_top_holds_five_categories() -> None:
    counts = Counter({c: 10 - i for i, c in enumerate("abcdefgh")})
    scores = categorical_scores(_categorical({c: 1 / 8 for c in "abcdefgh"}), counts)
    assert [c for c, _ in scores["top"]] == list("abcde")
    assert scores["max_share"] == pytest.approx(10 / sum(counts.values()))


def test_unseen_categories_count_in_their_own_psi_bucket() -> None:
    ref = _categorical({"a": 0.5, "b": 0.5})
    scores = categorical_scores(ref, Counter({"a": 40, "b": 40, "z": 15, "y": 5}))
    assert scores["unseen_share"] == pytest.approx(0.2)
    assert scores["psi"] == pytest.approx(psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]))
    # The same known shares without the unseen bucket would score far less.
    assert scores["psi"] > 10 * psi([0.5, 0.5], [0.5, 0.5]) + 1.0
    assert 0.0 < scores["js_distance"] <= 1.0
    assert UNSEEN not in dict(scores["top"])  # top lists the real categories
    assert dict(scores["top"])["z"] == pytest.approx(0.15)


def test_js_distance_is_zero_for_identical_and_at_most_one_otherwise() -> None:
    ref = _categorical({"a": 0.25, "b": 0.75})
    assert categorical_scores(ref, Counter({"a": 1, "b": 3}))["js_distance"] == pytest.approx(0.0, abs=1e-12)
    moved = categorical_scores(ref, Counter({"a": 3, "b": 1}))["js_distance"]
    assert 0.0 < moved < 1.0
    disjoint = categorical_scores(_categorical({"a": 1.0}), Counter({"q": 10}))
    assert disjoint["unseen_share"] == 1.0
    assert 0.0 < disjoint["js_distance"] <= 1.0
    assert disjoint["js_distance"] == pytest.approx(1.0)


def test_high_cardinality_reference_gives_no_shares_based_scores() -> None:
    ref = categorical_reference(Counter({f"id{i}": 1 for i in range(MAX_CATEGORIES + 1)}), nulls=0)
    assert ref is not None and ref.high_cardinality
    scores = categorical_scores(ref, Counter({"id1": 3, "other": 1}))
    assert scores["psi"] is None and scores["js_distance"] is None and scores["unseen_share"] is None
    assert scores["mode"] == "id1" and scores["max_share"] == 0.75


def test_categorical_scores_of_an_empty_window() -> None:
    scores = categorical_scores(_categorical({"a": 1.0}), Counter())
    assert scores == {"top": [], "mode": None, "max_share": None, "unseen_share": None, "psi": None,
                      "js_distance": None}


# --- the distribution monitor -----------------------------------------------------------------------------------


def test_monitor_refuses_empty_windows() -> None:
    with pytest.raises(ValueError):
        _monitor(window_events=0)
    with pytest.raises(ValueError):
        _monitor(reference_events=0)


def test_monitor_freezes_a_reference_then_emits_numbered_profiles() -> None:
    monitor = _monitor()
    events = _events(random.Random(8))
    _feed(monitor, events, 999)
    assert monitor.take_records() == [] and monitor.reference is None
    monitor.observe(next(events), 999)
    [ref_record] = monitor.take_records()
    assert ref_record.kind == REFERENCE and ref_record.origin == "first events"
    assert ref_record.events == 1000 and ref_record.stream == "events" and ref_record.source == "proc@host:1"
    assert ref_record.created_at == int(NOW * 1000)
    assert ref_record.fields["x"]["kind"] == "numeric" and ref_record.fields["colour"]["kind"] == "categorical"
    assert monitor.reference is not None and monitor.reference.as_fields() == ref_record.fields

    for _ in range(3):
        monitor.count_quarantined()
    _feed(monitor, events, 499, start_ms=10_000)
    assert monitor.take_records() == []
    monitor.observe(next(events), 20_000)
    _feed(monitor, events, 500, start_ms=30_000)
    first, second = monitor.take_records()
    assert monitor.take_records() == []
    assert [first.window, second.window] == [1, 2] and monitor.windows == 2
    assert first.kind == PROFILE and first.origin == "first events"
    assert first.events == 500 and first.quarantined == 3 and second.quarantined == 0
    assert (first.first_event_time, first.last_event_time) == (10_000, 20_000)
    assert (second.first_event_time, second.last_event_time) == (30_000, 30_499)
    x = first.fields["x"]
    assert x["count"] == 500 and x["null_rate"] == 0.0
    assert {"mean", "std", "min", "max", "skewness", "psi", "ks_statistic", "ks_pvalue", "adwin_changes"} <= set(x)
    colour = first.fields["colour"]
    assert colour["count"] == 500 and colour["mode"] in COLOURS and colour["unseen_share"] == 0.0


def test_monitor_with_a_given_reference_announces_it_at_construction() -> None:
    rng = random.Random(9)
    sample = WindowSample(("x",), ("colour",))
    events = _events(rng)
    for i in range(1000):
        sample.add(next(events), i)
    given = sample.reference(origin="schema profile")
    for _ in range(2):  # every start sends it again
        monitor = _monitor(reference=given)
        [record] = monitor.take_records()
        assert record.kind == REFERENCE and record.origin == "schema profile" and record.events == 1000
        assert Reference.from_fields(record.fields, events=record.events, origin=record.origin) == given
    _feed(monitor, events, 500)
    [profile] = monitor.take_records()
    assert profile.kind == PROFILE and profile.window == 1 and profile.origin == "schema profile"
    assert profile.events == 500 and profile.first_event_time == 0 and profile.last_event_time == 499


def test_stationary_stream_raises_no_alert() -> None:
    monitor = _monitor()
    _feed(monitor, _events(random.Random(10)), 1000 + 20 * 500)
    profiles = _profiles(monitor.take_records())
    assert [p.window for p in profiles] == list(range(1, 21))
    assert all(p.alerts == () and p.drifted == [] for p in profiles)
    assert max(p.fields["x"]["psi"] for p in profiles) < 0.1
    assert max(p.fields["colour"]["psi"] for p in profiles) < 0.1


def test_shift_raises_a_psi_alert_from_the_first_window_fully_after_it() -> None:
    monitor = _monitor()
    shift_at = 1000 + 4 * 500 + 250  # halfway through window 5
    _feed(monitor, _events(random.Random(11), shift_at=shift_at), 1000 + 8 * 500)
    profiles = _profiles(monitor.take_records())
    assert len(profiles) == 8
    assert all(p.alerts == () for p in profiles[:4])
    for p in profiles[5:]:
        assert p.drifted == ["x"]
        [alert] = p.alerts
        assert alert.rule == "psi" and alert.field == "x" and alert.threshold == 0.2
        assert alert.value == p.fields["x"]["psi"] and alert.value >= 0.2
        assert "x drifted" in alert.message


def test_drift_logs_one_warning_while_it_lasts_and_one_info_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=DRIFT_LOGGER)
    rng = random.Random(12)
    monitor = _monitor()
    _feed(monitor, _events(rng), 1000 + 3 * 500)
    _feed(monitor, _events(rng, shift_at=0), 4 * 500)
    _feed(monitor, _events(rng), 3 * 500)
    profiles = _profiles(monitor.take_records())
    assert [bool(p.drifted) for p in profiles] == [False] * 3 + [True] * 4 + [False] * 3
    drift_records = [r for r in caplog.records if r.name == DRIFT_LOGGER]
    warnings = [r for r in drift_records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "x drifted" in warnings[0].getMessage() and "window 4" in warnings[0].getMessage()
    back = [r for r in drift_records if r.levelno == logging.INFO and "back within" in r.getMessage()]
    assert len(back) == 1
    assert "x back within psi" in back[0].getMessage() and "window 8" in back[0].getMessage()


def test_adwin_changes_are_reported_per_numeric_field() -> None:
    rng = random.Random(13)
    monitor = _monitor()
    _feed(monitor, _events(rng), 1000 + 2 * 500)
    _feed(monitor, _events(rng, shift_at=0, shift=10.0), 3 * 500)
    profiles = _profiles(monitor.take_records())
    changes = [p.fields["x"]["adwin_changes"] for p in profiles]
    assert all(type(c) is int and c >= 0 for c in changes)
    assert sum(changes[2:]) > 0
    assert "adwin_changes" not in profiles[0].fields["colour"]


# --- batch-level contract rules ---------------------------------------------------------------------------------


def _rule_monitor(*rules: FieldRule) -> DistributionMonitor:
    reference = Reference(
        {"colour": CategoricalReference({"red": 0.5, "blue": 0.5}, 1000, 0.0),
         "x": NumericReference(tuple(float(v) for v in range(QUANTILE_POINTS)), 1000, 0.0, 50.0, 29.0)},
        1000, "schema profile",
    )
    monitor = _monitor(rules=rules, reference=reference, window_events=10)
    monitor.take_records()
    return monitor


def _window(monitor: DistributionMonitor, colours: Sequence[str | None], xs: Sequence[float | None] | None = None,
            notes: Sequence[str | None] | None = None) -> MonitoringRecord:
    assert len(colours) == 10
    for i, colour in enumerate(colours):
        event: dict[str, Any] = {"colour": colour, "x": xs[i] if xs else 50.0}
        if notes is None or notes[i] is not None:
            event["note"] = notes[i] if notes else "n"
        monitor.observe(event, i)
    [record] = monitor.take_records()
    return record


def _rule_alerts(record: MonitoringRecord) -> list[Alert]:
    return [a for a in record.alerts if a.rule != "psi"]


COLOUR_RULE = FieldRule("colour", "string", nullable=True, max_null_rate=0.1, max_category_share=0.6,
                        max_unseen_share=0.05)


def test_within_limit_window_raises_no_rule_alert() -> None:
    monitor = _rule_monitor(COLOUR_RULE)
    # null rate 0.1 and top share 5/9: at or under the limits, no unseen category.
    record = _window(monitor, ["red"] * 5 + ["blue"] * 4 + [None])
    assert _rule_alerts(record) == []
    assert record.fields["colour"]["null_rate"] == pytest.approx(0.1)


def test_null_rate_above_the_contract_raises_an_alert() -> None:
    monitor = _rule_monitor(COLOUR_RULE)
    record = _window(monitor, ["red"] * 4 + ["blue"] * 4 + [None, None])
    [alert] = _rule_alerts(record)
    assert (alert.field, alert.rule, alert.threshold) == ("colour", "max_null_rate", 0.1)
    assert alert.value == pytest.approx(0.2)
    assert "max_null_rate" in alert.message and "0.200" in alert.message


def test_category_share_above_the_contract_raises_an_alert() -> None:
    monitor = _rule_monitor(COLOUR_RULE)
    record = _window(monitor, ["red"] * 7 + ["blue"] * 3)
    [alert] = _rule_alerts(record)
    assert (alert.field, alert.rule, alert.threshold) == ("colour", "max_category_share", 0.6)
    assert alert.value == pytest.approx(0.7)


def test_unseen_share_above_the_contract_raises_an_alert() -> None:
    monitor = _rule_monitor(COLOUR_RULE)
    record = _window(monitor, ["red"] * 5 + ["blue"] * 4 + ["green"])
    [alert] = _rule_alerts(record)
    assert (alert.field, alert.rule, alert.threshold) == ("colour", "max_unseen_share", 0.05)
    assert alert.value == pytest.approx(0.1)


def test_null_rate_rules_on_numeric_and_unmonitored_fields() -> None:
    monitor = _rule_monitor(
        FieldRule("x", "double", nullable=True, max_null_rate=0.1),
        FieldRule("note", "string", nullable=True, max_null_rate=0.0),
        FieldRule("plain", "string", nullable=True),  # no batch-level rule: ignored
    )
    record = _window(monitor, ["red", "blue"] * 5, xs=[None, None, *[50.0] * 8],
                     notes=[None, *["n"] * 9])
    alerts = {a.field: a for a in _rule_alerts(record)}
    assert set(alerts) == {"x", "note"}
    assert alerts["x"].rule == "max_null_rate" and alerts["x"].value == pytest.approx(0.2)  # counted once
    assert alerts["note"].rule == "max_null_rate" and alerts["note"].value == pytest.approx(0.1)
    assert alerts["note"].threshold == 0.0
    clean = _window(monitor, ["red", "blue"] * 5)
    assert _rule_alerts(clean) == []


def _schema(contract: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "record", "name": "Event",
        "fields": [
            {"name": "colour", "type": ["null", "string"], "contract": contract},
            {"name": "x", "type": "double"},
        ],
    }


def test_contract_rules_from_a_schema_drive_the_monitor(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=DRIFT_LOGGER)
    schema = AvroSchema.from_dict(_schema({"max_category_share": 0.6, "max_null_rate": 0}))
    rule = schema.rule("colour")
    assert (rule.max_category_share, rule.max_null_rate, rule.max_unseen_share) == (0.6, 0, None)
    monitor = _rule_monitor(*schema.rules)
    assert set(monitor.rules) == {"colour"}
    for _ in range(2):
        [alert] = _rule_alerts(_window(monitor, ["red"] * 8 + ["blue"] * 2))
        assert (alert.rule, alert.threshold) == ("max_category_share", 0.6)
        assert alert.value == pytest.approx(0.8)
    assert _rule_alerts(_window(monitor, ["red"] * 5 + ["blue"] * 5)) == []
    messages = [(r.levelno, r.getMessage()) for r in caplog.records
                if r.name == DRIFT_LOGGER and "category_share" in r.getMessage()]
    assert [level for level, _ in messages] == [logging.WARNING, logging.INFO]
    assert "colour: category share 0.800 is above the contract's max_category_share 0.6" in messages[0][1]
    assert "colour back within max_category_share" in messages[1][1]


@pytest.mark.parametrize("key", ["max_null_rate", "max_category_share", "max_unseen_share"])
@pytest.mark.parametrize("bad", [1.5, -0.1, "0.1", True, None, float("nan")], ids=repr)
def test_schema_refuses_a_share_outside_zero_to_one_or_not_a_number(key: str, bad: Any) -> None:
    if bad is None:  # None means no rule: accepted; the two ends are accepted too
        for fine in (None, 0, 1, 0.5):
            assert getattr(AvroSchema.from_dict(_schema({key: fine})).rule("colour"), key) == fine
        return
    with pytest.raises(SchemaError, match=key):
        AvroSchema.from_dict(_schema({key: bad}))


# --- monitoring records -----------------------------------------------------------------------------------------


def _record(kind: str = PROFILE, source: str = "a", created_at: int = 1, **kwargs: Any) -> MonitoringRecord:
    return MonitoringRecord(kind=kind, stream="events", source=source, created_at=created_at,
                            fields={"x": {"kind": "numeric", "psi": 0.3}}, **kwargs)


def test_encode_decode_round_trip() -> None:
    record = _record(
        window=7, events=500, quarantined=2, first_event_time=10, last_event_time=20, origin="first events",
        alerts=(Alert("x", "psi", 0.3, 0.2, "x drifted"), Alert("y", "max_null_rate", 0.5, 0.1, "y nulls")),
    )
    key, value = encode_record(record)
    assert key == b"events"
    raw = json.loads(value)
    assert raw["format"] == FORMAT == 1 and raw["kind"] == PROFILE
    assert decode_record(value) == record
    reference = _record(kind=REFERENCE, origin="schema profile", events=1000)
    assert decode_record(encode_record(reference)[1]) == reference


def _encoded(**changes: Any) -> bytes:
    raw = _record().as_dict()
    raw.update(changes)
    return json.dumps(raw).encode()


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"not json",
        b"[1, 2]",
        _encoded(format=2),
        _encoded(format="1"),
        _encoded(kind="summary"),
        _encoded(fields=[["x", {}]]),
        _encoded(fields={"x": 1.0}),
        _encoded(alerts=[{"field": "x"}]),
    ],
    ids=["none", "empty", "not-json", "list", "format-2", "format-str", "unknown-kind", "fields-list",
         "field-not-object", "alert-incomplete"],
)
def test_decode_record_refuses_anything_else(value: bytes | None) -> None:
    with pytest.raises(RecordError):
        decode_record(value)


def test_latest_by_source_keeps_the_newest_per_source_and_kind() -> None:
    records = [
        _record(source="a", created_at=1, window=1),
        _record(kind=REFERENCE, source="a", created_at=2),
        _record(source="b", created_at=3, window=1),
        _record(source="a", created_at=4, window=2),
        _record(kind=REFERENCE, source="a", created_at=5),
    ]
    profiles = latest_by_source(records)
    assert set(profiles) == {"a", "b"}
    assert profiles["a"].window == 2 and profiles["b"].created_at == 3
    references = latest_by_source(records, REFERENCE)
    assert set(references) == {"a"} and references["a"].created_at == 5
    assert latest_by_source([]) == {}


def test_drifted_lists_only_psi_alerts() -> None:
    record = _record(alerts=(
        Alert("x", "psi", 0.3, 0.2, ""), Alert("y", "max_null_rate", 0.5, 0.1, ""), Alert("z", "psi", 1.0, 0.2, ""),
    ))
    assert record.drifted == ["x", "z"]
    assert _record().drifted == []
