"""The assistant app: calibration, metrics, build/answer/save/load, CLI, and a real CLINC150 slice."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from niche import LabeledData
from niche.apps.assistant import Assistant, AssistantConfig, calibrate, decide, oos_metrics, read_answers
from niche.cli import app
from niche.errors import DataError

from ...conftest import ROOT, write_csv

runner = CliRunner()

INTENTS = {
    "greet": ["hello", "hi", "good morning", "hey there"],
    "weather": ["weather", "rain", "sunny", "forecast"],
    "balance": ["balance", "money", "account", "funds"],
}
FILL = ["please", "tell", "me", "about", "the", "my", "what", "is", "now", "today"]
OOS_WORDS = ["zebra", "volcano", "poetry", "guitar", "quantum", "pyramid"]


def intent_data(n_per: int, n_oos: int, seed: int) -> LabeledData:
    rng = random.Random(seed)
    texts, labels = [], []
    for lab, keys in INTENTS.items():
        for _ in range(n_per):
            words = rng.choices(FILL, k=rng.randint(1, 4)) + [rng.choice(keys)]
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(lab)
    for _ in range(n_oos):
        words = rng.choices(FILL, k=rng.randint(1, 3)) + rng.sample(OOS_WORDS, 2)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append("oos")
    return LabeledData(texts, labels, f"toy-intents-{seed}")


def test_oos_metrics_by_hand() -> None:
    y = ["a", "a", "b", "oos", "oos", "oos"]
    p = ["a", "oos", "b", "oos", "a", "oos"]
    m = oos_metrics(y, p)
    assert m["in_scope_accuracy"] == pytest.approx(2 / 3)  # the declined in-scope "a" counts as wrong
    assert m["oos_recall"] == pytest.approx(2 / 3)
    assert m["oos_precision"] == pytest.approx(2 / 3)
    assert (m["in_scope"], m["oos"], m["declined"]) == (3, 3, 3)


def test_calibrate_meets_target_on_dev_and_decide_agrees() -> None:
    rng = np.random.default_rng(0)
    n_in, n_oos = 400, 60
    # in-scope: confident and similar; out-of-scope: lower on both, overlapping a little
    prob = np.concatenate([rng.beta(8, 1.5, n_in), rng.beta(2, 3, n_oos)])
    sim = np.concatenate([rng.normal(0.8, 0.08, n_in), rng.normal(0.5, 0.12, n_oos)])
    margin = np.concatenate([rng.normal(0.3, 0.1, n_in), rng.normal(0.0, 0.1, n_oos)])
    is_oos = np.arange(n_in + n_oos) >= n_in
    correct = np.concatenate([rng.random(n_in) < 0.95, np.zeros(n_oos, bool)])
    for target in (0.8, 0.95):
        th, rec = calibrate(prob, sim, margin, correct, is_oos, target, 0.02, use_margin=True)
        assert rec["reached_target"]
        declined = ~decide(prob, sim, margin, th)
        precision = (declined & is_oos).sum() / declined.sum()
        recall = (declined & is_oos).sum() / n_oos
        assert precision >= target
        assert rec["dev_oos_precision"] == pytest.approx(precision)
        assert rec["dev_oos_recall"] == pytest.approx(recall)
        assert recall > 0.5  # the features separate the classes well; a rule that declines nothing would fail this


def test_calibrate_without_oos_rejects_the_given_share() -> None:
    prob = np.linspace(0.01, 1.0, 100)
    th, rec = calibrate(prob, prob, np.full(100, np.inf), np.ones(100, bool), np.zeros(100, bool), 0.9, 0.05, False)
    assert (~decide(prob, prob, np.full(100, np.inf), th)).sum() == 5
    assert rec["dev_oos"] == 0


def test_calibrate_unreachable_target_declines_nothing() -> None:
    # out-of-scope queries look exactly like in-scope ones: no rule reaches 99 % precision
    prob = np.repeat(np.linspace(0.1, 1, 10), 10)  # each value: 5 in-scope, 5 out-of-scope queries
    is_oos = np.arange(100) % 2 == 0
    th, rec = calibrate(prob, prob, prob, np.ones(100, bool), is_oos, 0.99, 0.02, True)
    assert rec["reached_target"] is False
    assert decide(prob, prob, prob, th).all()


def test_build_answer_save_load(tiny_bert: Path, tmp_path: Path) -> None:
    train, dev, test = intent_data(40, 30, seed=1), intent_data(10, 20, seed=2), intent_data(10, 20, seed=3)
    cfg = AssistantConfig(family="sparse", classifier={}, encoder=str(tiny_bert), target_oos_precision=0.8)
    bot = Assistant.build(train, dev=dev, answers={"greet": "Hello! How can I help?"}, config=cfg)
    m = bot.evaluate(test)
    assert m["in_scope_accuracy"] >= 0.9
    assert m["oos_recall"] >= 0.5 and m["oos_precision"] >= 0.8
    a = bot.answer("hello good morning")[0]
    assert set(a) == {"intent", "answer", "confidence", "similarity", "matched_example", "in_scope"}
    assert a["intent"] == "greet" and a["in_scope"] and a["answer"] == "Hello! How can I help?"
    assert a["matched_example"] in train.texts
    declined = [x for x in bot.answer(test.texts) if not x["in_scope"]]
    assert declined and all(x["answer"] == cfg.fallback_answer for x in declined)
    assert bot.answer("rain today")[0]["answer"] in ("weather", cfg.fallback_answer)  # no canned answer: the intent

    d = bot.save(tmp_path / "bot")
    info = json.loads((d / "assistant.json").read_text())
    assert info["kind"] == "assistant" and info["calibration"]["reached_target"]
    again = Assistant.load(d)
    assert again.answer(test.texts) == bot.answer(test.texts)


def test_build_errors(tiny_bert: Path, tmp_path: Path) -> None:
    cfg = AssistantConfig(family="sparse", classifier={}, encoder=str(tiny_bert))
    only_oos = LabeledData(["a b", "c d"], ["oos", "oos"], "x.csv")
    with pytest.raises(DataError, match="every row is labeled 'oos'"):
        Assistant.build(only_oos, dev=only_oos, config=cfg)
    with pytest.raises(DataError, match="not in the training data: nope"):
        Assistant.build(intent_data(10, 5, 1), dev=intent_data(4, 4, 2), answers={"nope": "x"}, config=cfg)
    bad = write_csv(tmp_path / "answers.csv", [("greet", "")], header=("label", "answer"))
    with pytest.raises(DataError, match="line 2"):
        read_answers(bad)
    wrong = write_csv(tmp_path / "a2.csv", [("greet", "hi")], header=("intent", "reply"))
    with pytest.raises(DataError, match="expected the header label,answer; found intent, reply"):
        read_answers(wrong)


def test_cli_build_ask_evaluate(tiny_bert: Path, tmp_path: Path) -> None:
    tr, dv, te = intent_data(30, 20, 1), intent_data(8, 12, 2), intent_data(8, 12, 3)
    paths = [write_csv(tmp_path / f"{n}.csv", list(zip(d.texts, d.labels))) for n, d in (("tr", tr), ("dv", dv), ("te", te))]
    ans = write_csv(tmp_path / "answers.csv", [("balance", "Your balance is in the app under Accounts.")],
                    header=("label", "answer"))
    out = tmp_path / "bot"
    r = runner.invoke(app, ["assistant", "build", "--data", str(paths[0]), "--dev", str(paths[1]), "--answers", str(ans),
                            "--family", "sparse", "--base", str(tiny_bert), "--target-oos-precision", "0.8",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "abstention rule" in r.output
    r = runner.invoke(app, ["assistant", "ask", str(out), "what is my account balance", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output.strip().splitlines()[0])
    assert rec["intent"] == "balance" and rec["answer"].startswith("Your balance")
    r = runner.invoke(app, ["assistant", "evaluate", str(out), "--data", str(paths[2]), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["in_scope"] == 24
    r = runner.invoke(app, ["assistant", "ask", str(tmp_path / "missing"), "hi"])
    assert r.exit_code != 0 and "not an assistant directory" in r.output


CLINC = ROOT / "data" / "clinc150"


@pytest.mark.skipif(not (CLINC / "train.csv").is_file(), reason="bundled data/clinc150 not present")
def test_real_clinc150_slice_with_minilm_retrieval() -> None:
    """Real utterances, real MiniLM embeddings, 15 intents + oos; sparse classifier for speed."""
    from niche import read_labeled

    def slice_(name: str, n_oos: int) -> LabeledData:
        d = read_labeled(CLINC / f"{name}.csv")
        keep = sorted(set(d.classes) - {"oos"})[::10]  # 15 intents spread over the domains
        idx = [i for i, lab in enumerate(d.labels) if lab in keep]
        idx += [i for i, lab in enumerate(d.labels) if lab == "oos"][:n_oos]
        return d.subset(idx)

    train, dev, test = slice_("train", 100), slice_("validation", 100), slice_("test", 300)
    bot = Assistant.build(train, dev=dev, config=AssistantConfig(family="sparse", classifier={}, target_oos_precision=0.8))
    m = bot.evaluate(test)
    # measured: see docs/assistant.md; these are loose floors that a broken rule or index would miss
    assert m["in_scope_accuracy"] >= 0.8
    assert m["oos_recall"] >= 0.4 and m["oos_precision"] >= 0.7


def test_served_assistant_answers_and_maps_errors(tiny_bert: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from niche.config import ServeConfig
    from niche.serving.app import create_app

    cfg = AssistantConfig(family="sparse", classifier={}, encoder=str(tiny_bert), target_oos_precision=0.8)
    bot = Assistant.build(intent_data(30, 20, 1), dev=intent_data(8, 12, 2), answers={"greet": "Hi!"}, config=cfg)
    d = bot.save(tmp_path / "helpdesk")
    with TestClient(create_app({"helpdesk": d}, ServeConfig(api_key="k" * 16, max_texts=4))) as c:
        assert c.get("/readyz").json() == {"ready": True, "models": [], "assistants": ["helpdesk"]}
        h = {"X-API-Key": "k" * 16}
        r = c.post("/v1/assistants/helpdesk/answer", json={"inputs": ["hello good morning", "zebra volcano guitar"]}, headers=h)
        assert r.status_code == 200, r.text
        got = r.json()["answers"]
        assert got == bot.answer(["hello good morning", "zebra volcano guitar"])
        assert c.post("/v1/assistants/helpdesk/answer", json={"inputs": "hi"}).status_code == 401
        assert c.post("/v1/assistants/nobody/answer", json={"inputs": "hi"}, headers=h).status_code == 404
        assert c.post("/v1/assistants/helpdesk/answer", json={"inputs": ["a"] * 5}, headers=h).status_code == 413
        assert c.post("/v1/assistants/helpdesk/answer", json={"inputs": " "}, headers=h).status_code == 422
        assert c.post("/v1/assistants/helpdesk/answer", json={"text": "hi"}, headers=h).status_code == 422
        assert "/v1/assistants/{name}/answer" in c.get("/openapi.json").json()["paths"]


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition (None when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_served_assistant_reloads_new_version_and_reports_metrics(tiny_bert: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from niche.serving.app import create_app
    from niche.serving.assistant import AssistantServable
    from niche.serving.kinds import recognise

    cfg = AssistantConfig(family="sparse", classifier={}, encoder=str(tiny_bert), target_oos_precision=0.8)
    answers = {"greet": "Hi!", "weather": "Sunny.", "balance": "Ten euros."}
    train, dev = intent_data(30, 20, 1), intent_data(8, 12, 2)
    bot = Assistant.build(train, dev=dev, answers=answers, config=cfg)
    d = bot.save(tmp_path / "helpdesk")
    assert recognise(d) is AssistantServable
    texts = ["hello good morning", "zebra volcano guitar", "rain today"]
    v1 = bot.answer(texts)
    with TestClient(create_app({"helpdesk": d})) as c:
        assert c.post("/v1/assistants/helpdesk/answer", json={"inputs": texts}).json()["answers"] == v1
        listed = c.get("/v1/assistants").json()["assistants"]
        assert [a["name"] for a in listed] == ["helpdesk"] and sorted(listed[0]["intents"]) == sorted(answers)
        # a new version lands in the directory: every canned answer and the fallback change
        cfg2 = dataclasses.replace(cfg, fallback_answer=cfg.fallback_answer + " (v2)")
        bot2 = Assistant.build(train, dev=dev, answers={k: v + " (v2)" for k, v in answers.items()}, config=cfg2)
        bot2.save(d)
        v2 = bot2.answer(texts)
        assert all(a["answer"] != b["answer"] for a, b in zip(v1, v2))
        r = c.post("/v1/assistants/helpdesk/reload")
        assert r.status_code == 200, r.text
        assert r.json()["assistant"] == "helpdesk" and r.json()["reloaded"] is True and r.json()["load_seconds"] > 0
        assert c.post("/v1/assistants/helpdesk/answer", json={"inputs": texts}).json()["answers"] == v2
        assert c.get("/v1/assistants").json()["assistants"][0]["loaded_at"] > listed[0]["loaded_at"]
        assert c.post("/v1/assistants/nobody/reload").json()["error_type"] == "unknown_model"
        assert c.post("/v1/models/helpdesk/reload").status_code == 404  # an assistant, not a classifier
        m = c.get("/metrics").text
    route = {"route": "/v1/assistants/{name}/answer", "method": "POST", "status": "200"}
    assert metric(m, "niche_requests_total", **route) == 2
    assert metric(m, "niche_request_seconds_count", **route) == 2 and metric(m, "niche_request_seconds_sum", **route) > 0
    assert metric(m, "niche_requests_total", route="/v1/assistants/{name}/reload", method="POST", status="200") == 1
    assert metric(m, "niche_batch_texts_sum", model="helpdesk") == 2 * len(texts)  # micro-batched, both versions
    assert metric(m, "niche_batch_seconds_count", model="helpdesk") == 2
    assert metric(m, "niche_model_load_seconds", model="helpdesk") > 0
    assert metric(m, "niche_queue_depth", model="helpdesk") == 0

def test_calibrate_reweights_precision_to_the_expected_oos_rate() -> None:
    rng = np.random.default_rng(1)
    n_in, n_oos = 900, 100  # dev: 10 % out of scope
    prob = np.concatenate([rng.beta(6, 1.5, n_in), rng.beta(2, 3, n_oos)])
    flat = np.ones(n_in + n_oos)
    is_oos = np.arange(n_in + n_oos) >= n_in
    correct = ~is_oos
    th_dev, rec_dev = calibrate(prob, flat, flat, correct, is_oos, 0.8, 0.02, False)
    th_30, rec_30 = calibrate(prob, flat, flat, correct, is_oos, 0.8, 0.02, False, oos_rate=0.3)
    declined = ~decide(prob, flat, flat, th_30)
    tp, fp = (declined & is_oos).sum(), (declined & ~is_oos).sum()
    w = (0.3 / 0.7) * n_in / n_oos  # each dev oos query counts as w queries
    assert rec_30["dev_oos_precision"] == pytest.approx(w * tp / (w * tp + fp))
    # out-of-scope questions being commoner, the same precision allows declining more of them
    assert rec_30["dev_oos_recall"] >= rec_dev["dev_oos_recall"]
    assert rec_30["expected_oos_rate"] == 0.3 and rec_dev["expected_oos_rate"] == pytest.approx(0.1)
