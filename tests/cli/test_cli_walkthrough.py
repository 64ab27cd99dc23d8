"""The README's "Working with your own data" walk-through, run as written.

The test reads the bash block that follows the walk-through marker in
README.md and runs each line the way a user would: ``cd`` and ``export``
change the next commands' directory and environment, ``streamml ... &``
starts a long-running component, ``curl`` asks the model API. A line of any
other form fails the test, so the README cannot show a step nobody ran. Port
8080 is replaced by a free port, and the session broker and a fresh namespace
come from the CLI tier's environment.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.cli.conftest import STREAMML
from tests.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- walkthrough: tests/cli/test_cli_walkthrough.py runs the next block -->"


def walkthrough_lines(readme: str) -> list[str]:
    """The commands of the block after :data:`MARKER`: comments dropped, continuations joined."""
    start = readme.index(MARKER)
    block = re.search(r"```bash\n(.*?)```", readme[start:], re.S)
    assert block is not None, "no bash block after the walk-through marker"
    lines: list[str] = []
    pending = ""
    for raw in block.group(1).splitlines():
        line = re.sub(r"\s+#\s.*$", "", raw).rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append((pending + line).strip())
        pending = ""
    return lines


@dataclass
class Shell:
    """Just enough of a shell to run the walk-through: a directory, an environment, background jobs."""

    cwd: Path
    env: dict[str, str]
    logs: Path
    jobs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def run(self, line: str) -> None:
        words = shlex.split(line)
        background = words[-1] == "&"
        if background:
            words = words[:-1]
        if words[0] == "cd":
            self.cwd = (self.cwd / words[1]).resolve()
        elif words[0] == "export":
            for assignment in words[1:]:
                name, _, value = assignment.partition("=")
                self.env[name] = value
        elif words[0] == "streamml" and background:
            log = open(self.logs / f"job{len(self.jobs)}.log", "wb")  # noqa: SIM115  closed with the job
            process = subprocess.Popen(
                [STREAMML, *words[1:]], cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
            self.jobs.append((line, process))
        elif words[0] == "streamml":
            done = subprocess.run(
                [STREAMML, *words[1:]], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, f"{line} -> {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        elif words[0] == "curl":
            self.curl(line, words)
        else:
            raise AssertionError(f"the walk-through has a step this test cannot run: {line}")

    def curl(self, line: str, words: list[str]) -> None:
        url = next(w for w in words if w.startswith(("localhost", "http")))
        url = url if url.startswith("http") else f"http://{url}"
        body = words[words.index("-d") + 1].encode() if "-d" in words else None
        if url.endswith("/readyz"):
            # The first model arrives once the learner has published: wait for that condition.
            eventually(lambda: self._status(url) == 200, timeout=120, interval=0.5, what=f"{line} to answer 200")
            return
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, line
            answer = json.loads(response.read())
        if url.endswith("/predict"):
            assert isinstance(answer.get("model_version"), int), answer
            assert "prediction" in answer, answer

    def _status(self, url: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0  # not listening yet

    def stop_jobs(self) -> dict[str, int | None]:
        for _, process in self.jobs:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + 60
        for line, process in self.jobs:
            try:
                codes[line] = process.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[line] = None
        return codes


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path, cli_env: dict[str, str], unused_port: int) -> None:
    readme = (ROOT / "README.md").read_text()
    lines = [line.replace("8080", str(unused_port)) for line in walkthrough_lines(readme)]
    assert any(line.startswith("streamml serve") for line in lines) and any("/predict" in line for line in lines)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / "logs").mkdir()
    shell = Shell(cwd=tmp_path, env=dict(cli_env), logs=tmp_path / "logs")
    try:
        for line in lines:
            shell.run(line)
    finally:
        codes = shell.stop_jobs()
    logs = {p.name: p.read_text(errors="replace")[-1500:] for p in sorted((tmp_path / "logs").iterdir())}
    assert all(code == 0 for code in codes.values()), (codes, logs)
