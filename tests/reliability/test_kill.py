"""Kill -9 campaign (issue 18, item 4): every long job, killed with SIGKILL at seeded random points and
rerun, ends exactly like a run that was never killed.

Each job is the real CLI started as a subprocess in its own process group. A kill point is a seeded
random amount of progress (rows committed, checkpoint step, documents stored; wall time for
``niche recommend train``, which keeps no progress) plus a seeded random delay of up to a few hundred
milliseconds, so kills land in the middle of chunk writes, checkpoint saves, the final atomic save
and clean-ups as well as between them. The kills of a job are chained: each rerun resumes the state
the previous kill left (with the job's resume flag: ``--resume`` for training, none for ``predict`` and
``monitor run``, which resume by themselves), and the last rerun finishes. After every kill:

- no process of the job's process group is left (the monitor's prediction worker must exit with its
  parent; nothing else may linger);
- what is on disk is a state a later run can use: ``--out`` is absent or a complete model that loads
  (never half of one); batch output is the uninterrupted output's prefix up to the committed byte
  count; the monitor database holds whole batches, each document once.

After the final run: the result equals an uninterrupted reference run, and no temp directory, partial
checkpoint or checkpoint folder is left beside ``--out`` for a later run to trip over.

Which results are identical, and why:

- ``predict`` (sparse model): byte-identical output; a row's scores do not depend on the chunk it is in.
- ``monitor run``: identical database (documents, labels, mentions, buckets, alerts); alerts are
  delivered at least once, so the alerts file has the same alerts, possibly one repeated.
- ``train`` (transformer), ``pretrain`` (masked LM from scratch, character-level Chinese corpus) and
  ``distill`` (``layers:1`` student): identical predictions / weights (to 1e-5): training is seeded,
  and a checkpoint holds weights, AdamW moments, scheduler, RNG states and the position in the
  seeded batch order, so a resumed run takes the same steps. (A run killed before its first checkpoint
  starts over from the same seed.) The distill guard's speed check is timing-dependent: a result it
  refuses (exit 3) is refused in the reference too, or the test skips.
- ``recommend train``: keeps no checkpoints; a killed run leaves nothing and the rerun trains from
  scratch, seeded, so its rankings equal the reference's.

The fast variant (default suite) kills each job 3 times on small inputs; the ``slow`` one 20 times, with
batch prediction over 50,000 rows. Set ``NICHE_KILL_REPORT=DIR`` to get one JSON summary per job in DIR
(``JOB-N-kills.json``; ``benchmarks/reliability.py`` does).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ..conftest import FILLER, NEG, POS, TINY, build_tiny_bert, toy_texts, write_csv

SEED = 18
FAST, SLOW = 3, 20
GRACE = 15.0  # seconds the children of a killed job get to notice and exit
RUN_TIMEOUT = 300.0
PROBE = ["good food", "awful service", "the movie was great", "it is broken", "the food was really bad"]
# one torch/BLAS thread per job: on 2 shared cores two threads per tiny model spend more time contending
# than computing (a tiny `niche train` run takes half as long); reference and reruns use the same setting
ENV = os.environ | {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# -- processes -----------------------------------------------------------------------------------

def group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes of process group ``pgid``, as "pid cmdline"."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            state, pgrp = fields[0], int(fields[2])
            if pgrp == pgid and state not in ("Z", "X"):
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append(f"{d.name} {cmd[:160]}")
        except (OSError, ValueError, IndexError):
            continue
    return found


@dataclass
class Outcome:
    killed: bool
    rc: int | None
    seconds: float
    log: str
    orphans: list[str] = field(default_factory=list)


def run(argv: list[str], log: Path, kill_when: Callable[[], bool] | None = None, delay: float = 0.0,
        timeout: float = RUN_TIMEOUT) -> Outcome:
    """Run ``argv`` in a new process group; with ``kill_when``, SIGKILL the job's main process ``delay``
    seconds after ``kill_when()`` first holds (unless it exits first), then give its children ``GRACE``
    seconds to exit and report those that did not (they are then killed)."""
    t0 = time.monotonic()
    with log.open("w") as f:
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=ENV)
        killed = False
        try:
            while p.poll() is None and time.monotonic() - t0 < timeout:
                if kill_when is not None and kill_when():
                    time.sleep(delay)
                    if p.poll() is None:
                        os.kill(p.pid, signal.SIGKILL)  # the main process only, as `kill -9 PID` does
                        killed = True
                    break
                time.sleep(0.01)
            else:
                if p.poll() is None:  # ran past the timeout
                    os.killpg(p.pid, signal.SIGKILL)
            rc = p.wait(timeout=60)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    seconds = time.monotonic() - t0
    orphans: list[str] = []
    deadline = time.monotonic() + GRACE
    while True:
        left = group_members(p.pid)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if left:
        orphans = left
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return Outcome(killed, rc, seconds, log.read_text(errors="replace")[-3000:], orphans)


def niche(*args: object) -> list[str]:
    return [sys.executable, "-m", "niche", *map(str, args)]


# -- the campaign ---------------------------------------------------------------------------------

@dataclass
class Job:
    """One long job of the campaign.

    Args:
        argv: the command (the first run's; reruns add ``resume``).
        progress: 0..1, how far the running job has got, read from its files, or None when it cannot be
            read at the moment (``progress=None``: the job keeps no progress; kills use wall time).
        check_after_kill: raises AssertionError if the state a kill left is not usable.
        check_final: compares the finished result with the reference run's.
        leftovers: temp or partial files a later run could trip over (must be empty at the end).
    """

    name: str
    argv: list[str]
    ref_argv: list[str]
    resume: list[str]
    progress: Callable[[], float | None] | None
    check_after_kill: Callable[[], None]
    check_final: Callable[[], None]
    leftovers: Callable[[], list[str]]
    state: tuple[Path, ...] = ()
    """What a fresh start removes (outputs, checkpoints, the database)."""
    deterministic: bool = True
    max_delay: float = 0.3
    ok_codes: tuple[int, ...] = (0,)

    def reset(self) -> None:
        for p in self.state:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()


def campaign(job: Job, n: int, seed: int, logs: Path) -> dict[str, Any]:
    """Run the reference, then ``n`` chained kills and a final rerun; the record of what happened.

    Kill points: most come after a seeded random share of the work that is left (spread so that ``n`` of
    them fit before the end, and always after the run has made new progress), one in five at a random
    moment of the run's start-up (imports, reading the data, restoring a checkpoint: the time earlier
    runs took to make their first progress); a job without progress on disk is killed at a random
    moment of a run as long as the reference. A run that finishes before its kill point is not counted;
    the job then starts over from nothing and the campaign goes on until ``n`` kills have landed."""
    rng = random.Random(f"{seed}-{job.name}")
    logs.mkdir(parents=True, exist_ok=True)
    ref = run(job.ref_argv, logs / "ref.log")
    assert ref.rc in job.ok_codes and not ref.orphans, f"{job.name}: the reference run failed:\n{ref.log}"
    if ref.rc == 3:
        pytest.skip(f"{job.name}: the guard refused the reference result (timing-dependent speed check)")
    points: list[dict[str, Any]] = []
    result = {"final": "not reached"}
    try:
        startup = [0.5 * ref.seconds]  # seconds before a run's first progress, as last seen
        while sum(p["killed"] for p in points) < n and len(points) < 2 * n:
            i, left = len(points), n - sum(p["killed"] for p in points)
            delay = rng.uniform(0, job.max_delay)
            argv = job.argv + (job.resume if points else [])
            now = (job.progress() or 0.0) if job.progress else 0.0
            t0 = time.monotonic()
            seen: dict[str, Any] = {"first": None, "max": now}

            def progressed(now: float = now, t0: float = t0, seen: dict = seen) -> float:
                x = job.progress()
                if x is None:  # could not read it just now
                    x = seen["max"]
                elif x < seen["max"]:  # the job removed its checkpoints: its training is done
                    x = 1.0
                seen["max"] = max(seen["max"], x)
                if x > now and seen["first"] is None:
                    seen["first"] = time.monotonic() - t0
                return x

            if job.progress is None:
                trigger, at = "time", rng.uniform(0.05, 0.95) * ref.seconds
            elif rng.random() < 0.2:
                trigger, at = "start-up", rng.uniform(0, 1) * startup[0]
            else:
                trigger, at = "progress", now + (1 - now) * rng.uniform(0.1, 1.8) / (left + 1)

            def when(trigger: str = trigger, at: float = at, now: float = now, t0: float = t0) -> bool:
                x = progressed() if job.progress else 0.0
                return x > now and x >= at if trigger == "progress" else time.monotonic() - t0 >= at

            out = run(argv, logs / f"kill-{i}.log", when, delay)
            if seen["first"] is not None:
                startup[0] = seen["first"]
            point = {"point": i, "trigger": trigger, "at": round(at, 3), "from": round(now, 3), "delay_s": round(delay, 3),
                     "killed": out.killed, "seconds": round(out.seconds, 2), "orphans": out.orphans, "ok": False}
            points.append(point)
            if not out.killed:  # it finished (or failed) before the kill point: start over
                point["rc"] = out.rc
                assert out.rc in job.ok_codes, f"{job.name}: run {i} failed before its kill point:\n{out.log}"
                job.reset()
                continue
            assert not out.orphans, f"{job.name}: processes left after kill {i}: {out.orphans}"
            try:
                job.check_after_kill()
            except AssertionError as e:
                point["error"] = str(e)[:500]
                raise
            point["ok"] = True
        final = run(job.argv + job.resume, logs / "final.log")
        assert final.rc in job.ok_codes, f"{job.name}: the final rerun failed:\n{final.log}"
        if final.rc != ref.rc:
            pytest.skip(f"{job.name}: the guard's timing-dependent verdict differs (ref exit {ref.rc}, rerun {final.rc})")
        job.check_final()
        assert job.leftovers() == [], f"{job.name}: left behind: {job.leftovers()}"
        result["final"] = "identical"
    finally:  # the record is written whatever happened (a failed check shows in it)
        tried = [p for p in points if p["killed"]]
        # a kill is survived when the state it left was usable and the job still ended identical
        survived = sum(p["ok"] for p in tried) if result["final"] == "identical" else 0
        record = {"job": job.name, "tried": len(tried), "survived": survived, "planned": n,
                  "finished_before_kill": len(points) - len(tried), "identical": job.deterministic,
                  "final": result["final"], "reference_seconds": round(ref.seconds, 2), "points": points}
        report = os.environ.get("NICHE_KILL_REPORT")
        if report:
            Path(report).mkdir(parents=True, exist_ok=True)
            (Path(report) / f"{job.name}-{n}-kills.json").write_text(json.dumps(record, indent=2))
    assert len(tried) == n, f"{job.name}: only {len(tried)} of {n} planned kills landed: {points}"
    return record


def temp_siblings(*paths: Path) -> list[str]:
    """Temp directories and partial files beside each of ``paths`` (``.NAME.tmp-*``, ``.NAME.old-*``)."""
    found = []
    for p in paths:
        if p.parent.is_dir():
            found += [q.name for q in p.parent.iterdir() if q.name.startswith((f".{p.name}.tmp", f".{p.name}.old"))]
    return sorted(found)


def latest_step(ckpt: Path) -> int:
    try:
        return max((int(p.name.split("-")[1]) for p in ckpt.glob("step-*") if (p / "state.json").is_file()), default=0)
    except (OSError, ValueError):
        return 0


def out_is_absent_or_whole(out: Path) -> None:
    """A kill never leaves half a model at ``--out``: it is absent, or loads and predicts."""
    if out.exists():
        from niche import TextClassifier

        TextClassifier.load(out).predict(PROBE[:2])


# -- inputs --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from niche import TextClassifier

    d = tmp_path_factory.mktemp("kill-inputs")
    tr, ty = toy_texts(160, seed=1)
    dv, dy = toy_texts(40, seed=2)
    files = {"train": write_csv(d / "train.csv", list(zip(tr, ty))), "dev": write_csv(d / "dev.csv", list(zip(dv, dy)))}
    files["sparse"] = TextClassifier("sparse").fit(*toy_texts(300, seed=3)).save(d / "sparse")
    texts, labels = toy_texts(300, seed=4)
    files["sentiment"] = TextClassifier("sparse").fit(
        texts, ["positive" if y == "pos" else "negative" for y in labels]).save(d / "sentiment")
    files["bert"] = build_tiny_bert(d / "bert")
    return files


@pytest.fixture(scope="module")
def teacher(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer tiny transformer teacher: its 1-layer student is clearly faster (the CLI's guard demands it)."""
    from niche import TextClassifier

    d = tmp_path_factory.mktemp("kill-teacher")
    base = build_tiny_bert(d / "base4", num_hidden_layers=4, hidden_size=64, intermediate_size=256)
    tr, ty = toy_texts(160, seed=1)
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as fast as two on 2 idle cores, much faster on 2 busy ones
    try:
        return TextClassifier("transformer", base=str(base), **(TINY | {"epochs": 3})).fit(tr, ty).save(d / "teacher")
    finally:
        torch.set_num_threads(n)


def predict_job(inputs, tmp: Path, rows: int) -> Job:
    texts, labels = toy_texts(rows, seed=9)
    inp = write_csv(tmp / "big.csv", [(t, y) for t, y in zip(texts, labels)])
    out, ref = tmp / "scored.csv", tmp / "ref.csv"
    prog = out.with_name(out.name + ".progress.json")
    cmd = niche("predict", inputs["sparse"], inp, "--quiet", "--batch-size", "256")

    def progress() -> float | None:
        if not prog.exists():
            return 0.0
        try:
            return json.loads(prog.read_text()).get("rows", 0) / rows
        except (OSError, ValueError):
            return None

    def after_kill() -> None:
        if not prog.exists():
            return
        meta = json.loads(prog.read_text())
        assert meta["complete"] or out.stat().st_size >= meta["bytes"]
        committed = out.read_bytes()[:meta["bytes"]]
        assert ref.read_bytes().startswith(committed), "the committed part of the output differs from the reference"
        assert committed.count(b"\n") == (meta["rows"] + 1 if meta["bytes"] else 0)  # header + whole rows

    def final() -> None:
        assert out.read_bytes() == ref.read_bytes()
        assert json.loads(prog.read_text())["complete"]

    return Job("predict", cmd + ["--out", str(out)], cmd + ["--out", str(ref)], [], progress, after_kill, final,
               lambda: sorted(q.name for q in tmp.iterdir() if q.name.endswith(".tmp")), state=(out, prog), max_delay=0.2)


def train_job(inputs, tmp: Path, epochs: int) -> Job:
    out, ref = tmp / "model", tmp / "ref"
    ckpt = tmp / "model.checkpoints"
    steps = epochs * 10  # 160 rows / batch 16
    cmd = niche("train", "--data", inputs["train"], "--eval", inputs["dev"], "--base", inputs["bert"], "--max-len", "32",
                "--epochs", epochs, "--batch-size", "16", "--lr", "2e-3", "--head-lr-mult", "1", "--patience", "0",
                "--eval-every", "10", "--checkpoint-every", "2", "-q")

    def final() -> None:
        from niche import TextClassifier

        np.testing.assert_allclose(TextClassifier.load(out).predict_proba(PROBE),
                                   TextClassifier.load(ref).predict_proba(PROBE), atol=1e-5)
        a, b = (json.loads((d / "niche.json").read_text())["training"] for d in (ref, out))
        assert a["steps"] == b["steps"] == steps and a["evals"] == b["evals"]

    return Job("train", cmd + ["--out", str(out)], cmd + ["--out", str(ref)], ["--resume"],
               lambda: latest_step(ckpt) / steps, lambda: out_is_absent_or_whole(out), final,
               lambda: temp_siblings(out) + ([ckpt.name] if ckpt.exists() else []), state=(out, ckpt))


ZH = ["这家酒店的服务很好", "房间很干净，早餐也不错", "价格太贵了，不推荐", "快递很快，包装完好", "质量很差，用了两天就坏了",
      "屏幕清晰，电池耐用", "客服态度很差", "物流太慢了", "味道很好，下次还来", "书的内容很精彩"]


def pretrain_job(tmp: Path, steps: int) -> Job:
    rng = random.Random(0)
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join("，".join(rng.sample(ZH, 2)) + f"{i % 7}" for i in range(400)) + "\n", encoding="utf-8")
    out, ref = tmp / "mlm", tmp / "ref-mlm"
    ckpt = tmp / "mlm.checkpoints"
    cmd = niche("pretrain", "--corpus", corpus, "--layers", "1", "--hidden", "64", "--heads", "2", "--intermediate", "128",
                "--max-len", "32", "--vocab-size", "200", "--batch-size", "16", "--lr", "5e-3", "--warmup-ratio", "0.05",
                "--max-steps", steps, "--epochs", "50", "--checkpoint-every", "2", "--eval-every", "20",
                "--dev-texts", "0", "-q")

    def after_kill() -> None:
        if out.exists():
            assert (out / "model.safetensors").is_file() and (out / "pretrain_report.json").is_file()

    def final() -> None:
        from safetensors.numpy import load_file

        a, b = load_file(str(ref / "model.safetensors")), load_file(str(out / "model.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=k)
        assert json.loads((out / "pretrain_report.json").read_text())["steps"] == steps

    return Job("pretrain", cmd + ["--out", str(out)], cmd + ["--out", str(ref)], ["--resume"],
               lambda: latest_step(ckpt) / steps, after_kill, final,
               lambda: temp_siblings(out) + ([ckpt.name] if ckpt.exists() else []), state=(out, ckpt))


def distill_job(inputs, teacher: Path, tmp: Path, epochs: int) -> Job:
    out, ref = tmp / "student", tmp / "ref-student"
    ckpt = tmp / "student.checkpoints"
    steps = epochs * 10
    cmd = niche("distill", "--teacher", teacher, "--data", inputs["train"], "--eval", inputs["dev"], "--student", "layers:1",
                "--epochs", epochs, "--checkpoint-every", "2", "--eval-every", "10", "--patience", "0",
                "--max-drop", "100", "-q")

    def final() -> None:
        from niche import TextClassifier

        np.testing.assert_allclose(TextClassifier.load(out).predict_proba(PROBE),
                                   TextClassifier.load(ref).predict_proba(PROBE), atol=1e-5)

    return Job("distill", cmd + ["--out", str(out)], cmd + ["--out", str(ref)], ["--resume"],
               lambda: latest_step(ckpt) / steps, lambda: out_is_absent_or_whole(out), final,
               lambda: temp_siblings(out, out.with_name(out.name + ".distill-cache"))
               + ([ckpt.name] if ckpt.exists() else []) + [q.name for q in tmp.glob("*.distill-cache/*.tmp")],
               state=(out, ckpt), ok_codes=(0, 3))


def recommend_job(inputs, tmp: Path, tower_epochs: int) -> Job:
    rng = random.Random(0)
    items = [[f"p{i}", f"{POS[i % len(POS)]} movie", POS[(i + 3) % len(POS)]] for i in range(20)]
    items += [[f"n{i}", f"{NEG[i % len(NEG)]} film", NEG[(i + 3) % len(NEG)]] for i in range(20)]
    rows, t = [], 1000
    for u in range(30):
        kind = "p" if u % 2 == 0 else "n"
        for i in rng.sample(range(20), 8):
            t += rng.randint(1, 50)
            rows.append([f"u{u}", f"{kind}{i}", rng.choice([3, 4, 5]), t])
    inter = write_csv(tmp / "interactions.csv", rows, header=("user_id", "item_id", "rating", "timestamp"))  # type: ignore[arg-type]
    items_csv = tmp / "items.csv"
    with items_csv.open("w", encoding="utf-8") as f:
        f.write("item_id,title,genres\n" + "".join(",".join(r) + "\n" for r in items))
    out, ref = tmp / "rec", tmp / "ref-rec"
    cmd = niche("recommend", "train", "--interactions", inter, "--items", items_csv, "--base", inputs["bert"],
                "--max-len", "16", "--history", "5", "--tower-epochs", tower_epochs, "--steps", "2", "-q")

    def after_kill() -> None:
        if out.exists():
            from niche.apps.recommend import Recommender

            Recommender.load(out)

    def final() -> None:
        from niche.apps.recommend import Recommender

        a, b = Recommender.load(ref), Recommender.load(out)
        for hist in (["p1", "p2"], ["n3"], ["p4", "n5", "p6"]):
            ra, rb = a.rank(history=hist, k=10)["items"], b.rank(history=hist, k=10)["items"]
            assert [r["item_id"] for r in ra] == [r["item_id"] for r in rb]
            np.testing.assert_allclose([r["score"] for r in ra], [r["score"] for r in rb], atol=1e-5)

    return Job("recommend", cmd + ["--out", str(out)], cmd + ["--out", str(ref)], [], None, after_kill, final,
               lambda: temp_siblings(out), state=(out,), max_delay=0.0)


def monitor_job(inputs, tmp: Path, records: int) -> Job:
    rng = random.Random(11)
    feed = tmp / "feed.jsonl"
    t0 = 1_700_000_000
    with feed.open("w", encoding="utf-8") as f:
        for i in range(records):
            burst = 0.6 * records < i < 0.65 * records  # ACME's negative burst: an alert
            neg = burst or rng.random() < 0.1
            text = " ".join([rng.choice(FILLER), rng.choice(NEG if neg else POS), rng.choice(FILLER)])
            f.write(json.dumps({"id": f"d{i}", "ts": t0 + 60 * i, "entity": "ACME" if burst or i % 2 else "BETA",
                                "text": text}) + "\n")
    db, ref = tmp / "monitor.db", tmp / "ref.db"
    batch = 100

    def cmd(d: Path, alerts: Path) -> list[str]:
        return niche("monitor", "run", "--model", inputs["sentiment"], "--input", feed, "--db", d, "--batch-size", batch,
                     "--min-baseline", "10", "--alerts-jsonl", alerts, "--json")

    def progress() -> float | None:
        if not db.exists():
            return 0.0
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            try:
                return con.execute("SELECT count(*) FROM monitor_docs").fetchone()[0] / records
            finally:
                con.close()
        except sqlite3.Error:  # tables not created yet, or busy
            return None

    def tables(d: Path) -> dict[str, list]:
        con = sqlite3.connect(d)
        try:
            out = {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                   for t in ("monitor_docs", "monitor_mentions", "monitor_buckets", "monitor_progress")}
            out["alerts"] = sorted(con.execute("SELECT entity, window_end_ms FROM monitor_alerts").fetchall())
            return out
        finally:
            con.close()

    def after_kill() -> None:
        if not db.exists():
            return
        con = sqlite3.connect(db)
        try:
            n, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM monitor_docs").fetchone()
        finally:
            con.close()
        assert n == distinct and (n % batch == 0 or n == records), f"{n} documents stored: not whole batches"

    def alerts(p: Path) -> set[tuple[str, str]]:
        lines = p.read_text().splitlines() if p.exists() else []
        return {(a["entity"], a["window_end"]) for a in map(json.loads, lines)}

    def final() -> None:
        a, b = tables(ref), tables(db)
        for t in a:
            assert a[t] == b[t], t
        assert a["alerts"], "the feed's burst raised no alert: the comparison would prove little"
        assert alerts(tmp / "alerts.jsonl") == alerts(tmp / "ref-alerts.jsonl")

    return Job("monitor", cmd(db, tmp / "alerts.jsonl"), cmd(ref, tmp / "ref-alerts.jsonl"), [],
               progress, after_kill, final, lambda: temp_siblings(db),
               state=(db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), tmp / "alerts.jsonl"))


def jobs(name: str, inputs, teacher_dir: Callable[[], Path], tmp: Path, slow: bool) -> Job:
    d = tmp / name
    d.mkdir()
    if name == "predict":
        return predict_job(inputs, d, 50_000 if slow else 20_000)
    if name == "train":
        return train_job(inputs, d, 20 if slow else 3)
    if name == "pretrain":
        return pretrain_job(d, 160 if slow else 20)
    if name == "distill":
        return distill_job(inputs, teacher_dir(), d, 16 if slow else 2)
    if name == "recommend":
        return recommend_job(inputs, d, 20 if slow else 8)
    return monitor_job(inputs, d, 8000 if slow else 1500)


JOBS = ["predict", "train", "pretrain", "distill", "recommend", "monitor"]


@pytest.mark.parametrize("name", JOBS)
def test_kill_and_resume(name: str, inputs, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Fast variant: 3 seeded kills per job, small inputs."""
    job = jobs(name, inputs, lambda: request.getfixturevalue("teacher"), tmp_path, slow=False)
    campaign(job, FAST, SEED, tmp_path / "logs")


@pytest.mark.slow
@pytest.mark.parametrize("name", JOBS)
def test_kill_and_resume_20_times(name: str, inputs, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Slow variant: 20 seeded kills per job; batch prediction over 50,000 rows."""
    job = jobs(name, inputs, lambda: request.getfixturevalue("teacher"), tmp_path, slow=True)
    campaign(job, SLOW, SEED, tmp_path / "logs")


def test_group_members_sees_a_child_and_not_a_zombie(tmp_path: Path) -> None:
    """The orphan check itself: a grandchild left by a killed parent is found; nothing once it is gone."""
    p = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                          "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"],
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while len(group_members(p.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        left = group_members(p.pid)
        assert len(left) == 1 and "sleep(60)" in left[0], left  # the orphaned grandchild
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while group_members(p.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(p.pid) == []


def test_predict_killed_before_its_first_commit_resumes(inputs, tmp_path: Path) -> None:
    """Found by this campaign: a kill after `niche predict` created --out but before the first chunk was
    committed left an output without a progress file, and the rerun refused it ("already exists and was
    not written by an interrupted niche predict"). The progress file now comes first."""
    from niche import TextClassifier
    from niche.predict import predict_file

    texts, labels = toy_texts(100, seed=5)
    inp = write_csv(tmp_path / "in.csv", list(zip(texts, labels)))
    clf = TextClassifier.load(inputs["sparse"])
    predict_file(clf, inp, tmp_path / "ref.csv", str(inputs["sparse"]), chunk_rows=10, progress=False)
    real = clf.predict_proba

    def killed(*a, **k):
        raise KeyboardInterrupt  # dies while scoring the first chunk

    clf.predict_proba = killed
    with pytest.raises(KeyboardInterrupt):
        predict_file(clf, inp, tmp_path / "out.csv", str(inputs["sparse"]), chunk_rows=10, progress=False)
    clf.predict_proba = real
    res = predict_file(clf, inp, tmp_path / "out.csv", str(inputs["sparse"]), chunk_rows=10, progress=False)
    assert res["resumed_from"] == 0 and res["rows"] == 100
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()


def test_a_save_killed_midway_leaves_a_temp_dir_that_the_next_save_removes(inputs, tmp_path: Path) -> None:
    """Found by this campaign: a process killed inside ``write_dir_atomically`` left ``.NAME.tmp-*``
    beside --out for good. Its name now carries host and pid, and the next write removes it once that
    process is gone; a live writer's temp directory is kept."""
    from niche import TextClassifier
    from niche.modeldir import temp_sibling

    clf = TextClassifier("sparse").fit(*toy_texts(60))  # (a loaded sparse model cannot be saved again: its
    out = tmp_path / "model"                          # vectorizers have no vocabulary_; families/sparse.py)
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live_tmp = temp_sibling(out)  # this process's: alive
    other = live_tmp.with_name(live_tmp.name.replace(f"-{os.getpid()}-", f"-{p.pid}-"))
    stale = live_tmp.with_name(live_tmp.name.replace(f"-{os.getpid()}-", f"-{dead.stdout.strip()}-"))
    other.mkdir()
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    try:
        clf.save(out)
        assert stale.exists() is False and other.is_dir() and live_tmp.is_dir()
    finally:
        p.kill()
        p.wait()
    TextClassifier.load(out).predict(PROBE)


def test_replacing_a_model_directory_never_leaves_no_directory(inputs, tmp_path: Path) -> None:
    """``move_into_place`` swaps the new directory with the old one in one step (Linux renameat2), so a
    reader (or a kill) between the two renames of the old way could not find --out at all."""
    from niche.modeldir import move_into_place

    out = tmp_path / "model"
    shutil.copytree(inputs["sparse"], out)
    new = tmp_path / "new"
    shutil.copytree(inputs["sparse"], new)
    (new / "marker").write_text("new")
    renames: list[tuple[str, str]] = []
    real = os.replace

    def spy(a, b):
        renames.append((Path(a).name, Path(b).name))
        assert out.is_dir(), "--out was missing during the swap"
        return real(a, b)

    import niche.modeldir as md

    md.os.replace, saved = spy, md.os.replace
    try:
        move_into_place(new, out)
    finally:
        md.os.replace = saved
    assert (out / "marker").read_text() == "new" and not new.exists()
    if sys.platform == "linux":
        assert renames == [], renames  # one atomic exchange, no rename of --out away
