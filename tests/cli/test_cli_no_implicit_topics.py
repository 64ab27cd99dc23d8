"""No command creates a topic behind the user's back.

Before, `models list`, `serve` and `learn` on an empty namespace made the
embedded broker auto-create pipeline topics with 4 partitions, and a later
`topics create` found them wrong. Now each fails with one line naming what
is missing and how to create it (exit 2), and the namespace stays empty.
"""

from __future__ import annotations

from streamml.cluster import Cluster
from streamml.config import load_settings
from tests.cli.conftest import Runner

NEEDS_TOPICS = [
    ("models", "list"),
    ("models", "show", "demo-classifier", "1"),
    ("learn", "--max-events", "1"),
    ("score", "--max-events", "1"),
    ("serve", "--port", "0"),
    ("process",),
    ("deadletters",),
]


def _namespace_topics(env: dict[str, str]) -> list[str]:
    settings = load_settings(env={}, bootstrap_servers=env["STREAMML_BOOTSTRAP_SERVERS"])
    metadata = Cluster(settings).admin.list_topics(timeout=10)
    return sorted(name for name in metadata.topics if name.startswith(env["STREAMML_NAMESPACE"]))


def test_read_only_and_long_running_commands_create_nothing(run: Runner, cli_env: dict[str, str]) -> None:
    for args in NEEDS_TOPICS:
        done = run(*args, timeout=60)
        assert done.returncode == 2, done
        assert len(done.stderr_lines) == 1 and "streamml topics create" in done.stderr, done
        assert cli_env["STREAMML_NAMESPACE"] in done.stderr  # it names the missing topic(s)
    for args in (("lag",), ("drift",), ("topics", "list")):
        run(*args, timeout=60)  # these may say "nothing yet"; they must not create anything either
    assert _namespace_topics(cli_env) == []


def test_after_topics_create_the_same_commands_work(run: Runner) -> None:
    assert run("topics", "create").returncode == 0
    for args in (("models", "list"), ("deadletters",), ("lag",), ("drift",), ("topics", "list")):
        done = run(*args)
        assert done.returncode == 0, done
    # The topic is there, the model is not: named as such, not as a missing topic.
    done = run("models", "show", "demo-classifier", "1")
    assert done.returncode == 2 and "holds no versions yet" in done.stderr, done
