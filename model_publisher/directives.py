"""Issue signed serving directives: roll a model back to a version, pin it, unpin it.

A directive is checked against the history before it is sent, so an operator
gets a clear error instead of a directive every consumer would refuse: the
target must be a version the registry accepts, and the sequence number is one
past the last directive of that model, so consumers can refuse replays.
"""

from __future__ import annotations

import logging

from streamml.cluster import Cluster
from streamml.errors import ConfigError
from streamml.kafka import Deliveries, produce
from streamml.model_control import ControlRecord, control_serde
from streamml.registry import read_history
from streamml.signing import signer_from_settings

__all__ = ["issue_directive"]

logger = logging.getLogger(__name__)


def issue_directive(
    cluster: Cluster,
    model_name: str,
    action: str,
    version: int | None = None,
    *,
    reason: str = "",
    timeout: float = 30.0,
) -> ControlRecord:
    """Sign and publish a ``rollback``/``pin`` (with ``version``) or ``unpin`` for ``model_name``.

    Raises :class:`ConfigError` when there is no signing key (unless
    development mode is on), when the model has no versions (naming the
    closest model that has), or when
    ``version`` is not one consumers would accept.
    """
    settings = cluster.settings
    signer = signer_from_settings(settings)
    if signer is None and not settings.development_mode:
        raise ConfigError(
            f"no model signing key to sign the {action}: consumers obey only signed directives "
            "(STREAMML_MODEL_SIGNING_KEY_FILE, or run 'streamml keys generate')"
        )
    # Every model is read (not only this one), so an unknown name gets a "did you mean".
    history = read_history(cluster, timeout=timeout)
    history.require_model(model_name, cluster.topics.models)
    acceptable = history.acceptable(model_name)
    if action != "unpin":
        if version is None:
            raise ConfigError(f"{action} needs a version")
        if version not in acceptable:
            known = ", ".join(f"v{v}" for v in sorted(acceptable)) or "none"
            raise ConfigError(f"{model_name} v{version} is not a version consumers accept (acceptable: {known})")
    record = ControlRecord(
        model_name=model_name,
        action=action,
        version=None if action == "unpin" else version,
        sequence=history.states[model_name].next_sequence(),
        reason=reason,
    )
    if signer is not None:
        record = record.signed_by(signer)
    producer = cluster.producer(**{"linger.ms": 0})
    deliveries = Deliveries()
    produce(
        producer,
        cluster.topics.models,
        record.encode(),
        key=model_name.encode(),
        headers=control_serde().headers,
        on_delivery=deliveries,
    )
    deliveries.wait(producer, timeout, record.describe())
    logger.info("published %s", record.describe())
    return record
