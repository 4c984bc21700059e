"""Schemathesis against a real ``niche serve`` (a sparse classifier, an assistant, a recommender),
without and with an API key: every check, the examples, coverage, fuzzing and stateful phases,
deterministic (``--generation-deterministic``: no randomness, no example database; one worker) and bounded
(``--max-examples``). Any failure fails the test. What the run may treat as this API's own is in
``schemathesis.toml`` next to this file (413 is a rejection; a rank's ids must be the model's)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("schemathesis", reason="schemathesis (dev extra) not installed")

from niche import TextClassifier  # noqa: E402

from ..apps.assistant.test_assistant import intent_data  # noqa: E402
from ..apps.recommend.test_recommend import TINY_REC, planted  # noqa: E402
from ..conftest import free_port, toy_texts, wait_ready  # noqa: E402

KEY = "fuzz-key-0123456789"
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 20


@pytest.fixture(scope="module")
def served(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """``NAME=DIR`` of a tiny model of every kind."""
    from niche.apps.assistant import Assistant, AssistantConfig
    from niche.apps.recommend import Recommender
    from niche.apps.recommend import data as rd

    root = tmp_path_factory.mktemp("fuzzed")
    tr, ty = toy_texts(160, seed=1)
    sp = TextClassifier("sparse").fit(tr, ty).save(root / "sp")
    cfg = AssistantConfig(family="sparse", classifier={}, encoder=str(tiny_bert), target_oos_precision=0.8)
    bot = Assistant.build(intent_data(30, 20, 1), dev=intent_data(8, 12, 2), answers={"greet": "Hi!"},
                          config=cfg).save(root / "bot")
    (root / "rec").mkdir()
    data = rd.load(*planted(root / "rec"))
    rec = Recommender(base=str(tiny_bert), **(TINY_REC | dict(tower_epochs=2, steps=1))).fit(data)
    rec.save(root / "rec" / "model")
    return [f"sp={sp}", f"bot={bot}", f"rec={root / 'rec' / 'model'}"]


def schemathesis_cli() -> list[str]:
    st = Path(sys.executable).with_name("st")
    return [str(st)] if st.exists() else [shutil.which("st") or "st"]


@pytest.fixture(scope="module")
def servers(served: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, tuple[str, Path]]]:
    """Two ``niche serve`` on loopback, started together (start-up is mostly imports): without and
    with an API key. Keyed by "has a key": (base URL, log file)."""
    d = tmp_path_factory.mktemp("servers")
    (d / "key").write_text(KEY + "\n")
    procs, out = [], {}
    try:
        for keyed in (False, True):
            port, log = free_port(), d / f"serve-{keyed}.log"
            cmd = [sys.executable, "-m", "niche", "serve", *served, "--port", str(port), "--max-texts", "8",
                   "--max-chars", "200", *(["--api-key-file", str(d / "key")] if keyed else [])]
            with log.open("w") as f:
                procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT))
            out[keyed] = (f"http://127.0.0.1:{port}", log)
        for base, _ in out.values():
            wait_ready(base)
        yield out
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def test_schemathesis_finds_nothing(servers: dict[bool, tuple[str, Path]], tmp_path: Path) -> None:
    """Both runs at once (one worker each: each run is deterministic, its server its own)."""
    runs = {}
    for keyed, (base, _) in servers.items():
        auth = ["-H", f"Authorization: Bearer {KEY}"] if keyed else []
        out = tmp_path / f"st-{'api-key' if keyed else 'open'}.txt"
        with out.open("w") as f:
            proc = subprocess.Popen([*schemathesis_cli(), "--config-file", str(CONFIG), "--no-color", "run",
                                     f"{base}/openapi.json", "--checks", "all",
                                     "--phases", "examples,coverage,fuzzing,stateful",
                                     "--max-examples", str(MAX_EXAMPLES), "--generation-deterministic",
                                     "--workers", "1", "--request-timeout", "30", *auth],
                                    cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT)
        runs[keyed] = (proc, out)
    try:
        for keyed, (proc, out) in runs.items():
            rc = proc.wait(timeout=300)
            text, logs = out.read_text(), servers[keyed][1].read_text()
            which = "with the API key" if keyed else "without a key"
            assert rc == 0, f"schemathesis {which}:\n{text[-12000:]}\n--- server log ---\n{logs[-4000:]}"
            assert "Stateful (not applicable)" not in text and "API Links" in text, text[-4000:]  # links followed
            assert "Traceback" not in logs, logs[-4000:]
    finally:
        for proc, _ in runs.values():
            if proc.poll() is None:
                proc.kill()
