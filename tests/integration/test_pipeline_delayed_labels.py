"""The whole pipeline in delayed-label mode on the real broker (``streamml demo --label-delay``).

Events go in without labels, labels come up to a second later (2% twice);
every valid event must be joined once, the learner must learn every joined
event with the prediction it made when the features came (delayed
progressive validation), and every other check of the demo must hold.
"""

from __future__ import annotations

import pytest

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.envelope import decode_envelope
from streamml.errors import EnvelopeError
from streamml.kafka import record_headers
from streamml.reader import read_to_end
from streamml_cli.orchestration.demo import DemoOptions, run_demo

pytestmark = pytest.mark.integration


def test_the_demo_in_delayed_label_mode_passes_every_check(settings: Settings) -> None:
    # The session's key pair (the fixture's settings): the demo's children inherit it.
    settings = settings.with_overrides(publish_every_seconds=3.0)
    result = run_demo(
        settings,
        DemoOptions(events=3000, rate=400, bad_fraction=0.03, seed=11, timeout=300, embedded=False, label_delay=1.0),
    )
    assert result.checks and all(result.checks.values()), result.checks
    assert "every valid event was joined with its delayed label, once" in result.checks
    snapshot = result.snapshot
    assert snapshot.joined == snapshot.features > 2800
    cluster = Cluster(settings)
    envelopes = []
    for message in read_to_end(cluster, cluster.topics.models):
        try:
            envelopes.append(decode_envelope(message.value(), record_headers(message)))
        except EnvelopeError:
            continue  # chunks and directives are not envelopes
    final = max((e for e in envelopes if e.model_name == settings.model_name), key=lambda e: e.version).metrics
    assert final["n_learned"] == snapshot.joined
    # Predictions are made when the features come; only a vector read after its label lacks one.
    assert final["n_predicted_late"] <= 0.05 * final["n_learned"]
