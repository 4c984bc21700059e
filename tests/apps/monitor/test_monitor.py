"""`niche monitor` (issue 5A): ingestion into real SQLite and a real throw-away PostgreSQL server,
idempotence, resume after a kill, the alert rule and its cooldown, bad input, webhook delivery to
a real HTTP server on loopback, the report, the CLI, and a replay of real Financial PhraseBank
sentences (skipped without ../shared)."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ...conftest import NEG, POS, SHARED, free_port, toy_texts
from typer.testing import CliRunner

from niche import TextClassifier
from niche.apps.monitor import AlertRule, MonitorConfig, run_monitor
from niche.apps.monitor.alerts import parse_duration, post_webhook
from niche.apps.monitor.feed import EntityMatcher, parse_ts
from niche.apps.monitor.store import docs, mentions, open_store
from niche.errors import ConfigError, DataError

T0 = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc).timestamp()
PHRASEBANK = SHARED / "financial_phrasebank"


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sparse sentiment model on the toy task, labels negative/positive (fits in about a second)."""
    texts, labels = toy_texts(300, seed=3)
    clf = TextClassifier("sparse").fit(texts, ["positive" if y == "pos" else "negative" for y in labels])
    return clf.save(tmp_path_factory.mktemp("monitor-model") / "toy")


@pytest.fixture(scope="module")
def model(model_dir: Path) -> TextClassifier:
    return TextClassifier.load(model_dir)


def _pg_bin() -> Path | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


@pytest.fixture(scope="module")
def pg_server():
    """A throw-away PostgreSQL cluster: initdb in a temp dir, unix socket only, a free port.

    As root, the server runs as the ``postgres`` system user (PostgreSQL refuses to run as root).
    """
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install -e '.[postgres]')")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; `make postgres` installs them (Debian)")
    prefix: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="niche-pg-"))
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        if not shutil.which("runuser"):
            pytest.skip("running as root and runuser is missing")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    base.chmod(0o755)
    data, port = base / "data", free_port()
    try:
        subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                       check=True, capture_output=True)
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o",
                                 f"-p {port} -k {base} -c listen_addresses='' -c fsync=off", "start"],
                       check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"could not start a temporary PostgreSQL server: {e.stderr.decode(errors='replace')[-300:]}")
    yield base, port
    subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'monitor.db'}"
    sock, port = request.getfixturevalue("pg_server")
    import psycopg

    name = f"t{os.getpid()}_{time.time_ns()}"
    with psycopg.connect(host=str(sock), port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://postgres@/{name}?host={sock}&port={port}"


# -- feeds --------------------------------------------------------------------------------------
def _toy_text(rng: random.Random, negative: bool) -> str:
    words = rng.choices(["the", "service", "was", "really", "quite", "and", "it"], k=rng.randint(2, 6))
    words.insert(rng.randrange(len(words) + 1), rng.choice(NEG if negative else POS))
    return " ".join(words)


def calm_feed(hours: float, entities: tuple[str, ...] = ("ACME", "BETA"), every_min: float = 6, neg_share: float = 0.1,
              seed: int = 0, start: float = T0, prefix: str = "c") -> list[dict[str, Any]]:
    """One text per entity every ``every_min`` minutes, ``neg_share`` of them negative."""
    rng = random.Random(seed)
    out = []
    for i in range(int(hours * 60 / every_min)):
        for e in entities:
            out.append({"id": f"{prefix}{i}-{e}", "ts": start + i * every_min * 60 + rng.uniform(0, 30), "entity": e,
                        "text": _toy_text(rng, rng.random() < neg_share)})
    return out


def burst(entity: str, at: float, n: int = 20, minutes: float = 30, prefix: str = "b", seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"id": f"{prefix}{i}", "ts": at + i * minutes * 60 / n, "entity": entity, "text": _toy_text(rng, True)}
            for i in range(n)]


def write_feed(path: Path, recs: list[dict[str, Any]], iso: bool = True) -> Path:
    recs = sorted(recs, key=lambda r: r["ts"])
    with path.open("w", encoding="utf-8") as f:
        for r in recs:
            r = dict(r)
            if iso:
                r["ts"] = dt.datetime.fromtimestamp(r["ts"], dt.timezone.utc).isoformat()
            f.write(json.dumps(r) + "\n")
    return path


def db_ids(url: str) -> list[str]:
    store = open_store(url)
    try:
        with store.engine.connect() as conn:
            return [r[0] for r in conn.execute(docs.select().with_only_columns(docs.c.id))]
    finally:
        store.close()


def db_alerts(url: str) -> list[tuple[str, int]]:
    store = open_store(url)
    try:
        return [(a["entity"], a["window_end_ms"]) for a in store.all_alerts()]
    finally:
        store.close()


# -- units --------------------------------------------------------------------------------------
def test_entity_matching_and_timestamps():
    m = EntityMatcher(["NOK=Nokia|Nokia Oyj", "Stora Enso", "UPM"])
    assert m.find("NOKIA and stora enso fell; Nokian Tyres rose") == ["NOK", "Stora Enso"]
    assert m.find("Nokia Oyj said") == ["NOK"]
    assert m.find("UPM-Kymmene and UPMs") == ["UPM"]  # '-' ends a word, 's' continues it
    assert m.find("nothing here") == [] and EntityMatcher([]).find("Nokia") == []
    assert parse_ts("2024-03-01T00:00:00Z") == parse_ts("2024-03-01T01:00:00+01:00") == int(T0 * 1000)
    assert parse_ts("2024-03-01T00:00:00") == int(T0 * 1000)  # naive = UTC
    assert parse_ts(T0) == int(T0 * 1000)
    for bad in ("yesterday", True, [1], 1e15):
        with pytest.raises((ValueError, TypeError)):
            parse_ts(bad)
    assert parse_duration("15m") == dt.timedelta(minutes=15) and parse_duration("7d") == dt.timedelta(days=7)
    with pytest.raises(ConfigError, match="duration"):
        parse_duration("7 fortnights")


def test_rule_pvalues_match_definitions():
    from scipy.stats import binom, norm

    r = AlertRule()
    assert r.p_value(6, 10, 10, 200) == pytest.approx(binom.sf(5, 10, 11 / 202))
    z = AlertRule(test="ztest")
    q = 16 / 210
    expect = norm.sf((0.6 - 0.05) / (q * (1 - q) * (1 / 10 + 1 / 200)) ** 0.5)
    assert z.p_value(6, 10, 10, 200) == pytest.approx(expect)
    assert r.p_value(1, 10, 10, 200) > 0.4  # one negative in ten is no evidence


# -- ingestion: idempotence and resume ------------------------------------------------------------
def test_idempotent_reingest(tmp_path: Path, model: TextClassifier, db_url: str):
    recs = calm_feed(hours=5)
    feed = write_feed(tmp_path / "a.jsonl", recs)
    s1 = run_monitor(model, feed, db_url, config=MonitorConfig(batch_size=16))
    assert (s1.stored, s1.duplicates, s1.mentions) == (len(recs), 0, len(recs))
    s2 = run_monitor(model, feed, db_url)  # same file: resumes at its end, reads nothing
    assert (s2.lines, s2.stored) == (0, 0) and s2.resumed == {str(feed): len(recs)}
    copy = tmp_path / "b.jsonl"  # the same ids under another file name: all ignored
    shutil.copy(feed, copy)
    s3 = run_monitor(model, copy, db_url)
    assert (s3.records, s3.stored, s3.duplicates) == (len(recs), 0, len(recs))
    # an id repeated inside one batch is stored once, too
    dup = write_feed(tmp_path / "c.jsonl", [recs[0] | {"id": "new"}, recs[1] | {"id": "new"}])
    s4 = run_monitor(model, dup, db_url)
    assert (s4.stored, s4.duplicates) == (1, 1)
    ids = db_ids(db_url)
    assert len(ids) == len(set(ids)) == len(recs) + 1


def test_resume_after_failure_mid_batch(tmp_path: Path, model: TextClassifier, db_url: str):
    """A crash inside batch 3's transaction: batches 1-2 stay, batch 3 rolls back; the rerun completes
    the feed with nothing lost or doubled, and raises the same alerts as an uninterrupted run."""
    recs = calm_feed(hours=30, every_min=10) + burst("ACME", T0 + 26 * 3600)
    feed = write_feed(tmp_path / "feed.jsonl", recs)
    cfg = MonitorConfig(batch_size=40, rule=AlertRule(min_baseline=10))

    def crash(batch_no: int) -> None:
        if batch_no == 3:
            raise RuntimeError("simulated kill")

    with pytest.raises(RuntimeError, match="simulated kill"):
        run_monitor(model, feed, db_url, config=cfg, before_commit=crash)
    assert len(db_ids(db_url)) == 80
    s = run_monitor(model, feed, db_url, config=cfg)
    assert s.resumed == {str(feed): 80} and s.stored == len(recs) - 80 and s.duplicates == 0
    ids = db_ids(db_url)
    assert sorted(ids) == sorted(r["id"] for r in recs)
    ref = tmp_path / "ref.db"
    run_monitor(model, feed, ref, config=cfg)
    assert db_alerts(db_url) == db_alerts(f"sqlite:///{ref}") and len(db_alerts(db_url)) == 1


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (Linux /proc; empty elsewhere)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_resume_after_sigkill(tmp_path: Path, model_dir: Path):
    """A real `niche monitor run` process killed with SIGKILL mid-feed, then rerun."""
    rng = random.Random(5)
    n = 40000
    recs = [{"id": f"k{i}", "ts": T0 + i, "entity": "ACME", "text": _toy_text(rng, rng.random() < 0.1)} for i in range(n)]
    feed = write_feed(tmp_path / "big.jsonl", recs, iso=False)
    db = tmp_path / "kill.db"
    cmd = [sys.executable, "-m", "niche", "monitor", "run", "--model", str(model_dir), "--input", str(feed), "--db",
           str(db), "--batch-size", "100", "--alerts-jsonl", str(tmp_path / "alerts.jsonl")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stored = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            with sqlite3.connect(db, timeout=5) as c:
                stored = c.execute("SELECT count(*) FROM monitor_docs").fetchone()[0]
        except sqlite3.Error:
            continue
        if stored >= 500:
            children = _children(proc.pid)  # the prediction worker process
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(30)
    if stored >= 500 and Path("/proc").is_dir():  # the worker does not outlive its killed parent
        deadline = time.time() + 30
        while time.time() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
            time.sleep(0.1)
        assert children and not [c for c in children if Path(f"/proc/{c}").exists()]
    if not 0 < stored < n:
        pytest.skip(f"the run finished before it could be killed ({stored} rows seen)")
    with sqlite3.connect(db) as c:
        at_kill = c.execute("SELECT count(*) FROM monitor_docs").fetchone()[0]
        line = c.execute("SELECT line FROM monitor_progress").fetchone()[0]
    assert at_kill == line and at_kill % 100 == 0  # progress committed with its batch, batch by batch
    res = CliRunner().invoke(_app(), cmd[3:] + ["--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["resumed"] == {str(feed): at_kill} and summary["stored"] == n - at_kill and summary["duplicates"] == 0
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*), count(DISTINCT id) FROM monitor_docs").fetchone() == (n, n)


# -- alerts -------------------------------------------------------------------------------------
def test_burst_alerts_once_and_cooldown(tmp_path: Path, model: TextClassifier, db_url: str):
    """Calm for days (never an alert), a burst (one alert, the rest suppressed by the cooldown), a
    second burst inside the cooldown (nothing), a third after it (a second alert)."""
    b1, b2, b3 = T0 + 50 * 3600, T0 + 53 * 3600, T0 + 60 * 3600
    recs = (calm_feed(hours=72) + burst("ACME", b1, prefix="x") + burst("ACME", b2, prefix="y", seed=2)
            + burst("ACME", b3, prefix="z", seed=3))
    feed = write_feed(tmp_path / "feed.jsonl", recs)
    got: list[dict[str, Any]] = []
    s = run_monitor(model, feed, db_url, config=MonitorConfig(alerts_jsonl=tmp_path / "alerts.jsonl"), on_alert=got.append)
    ends = [a[1] / 1000 for a in db_alerts(db_url)]
    assert len(ends) == 2 and s.alerts == 2 and s.suppressed_by_cooldown >= 2
    assert b1 < ends[0] <= b1 + 3600 and b3 < ends[1] <= b3 + 3600
    assert [a["entity"] for a in got] == ["ACME", "ACME"] and got[0]["negative_share"] > 0.5
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [x["window_end"] for x in lines] == [a["window_end"] for a in got]
    # the same rule with a short cooldown alerts on the second burst as well
    s2 = run_monitor(model, feed, tmp_path / "short.db", config=MonitorConfig(rule=AlertRule(cooldown="2h")))
    assert s2.alerts == 3


def test_alert_delivery_survives_a_crash_after_commit(tmp_path: Path, model: TextClassifier):
    recs = calm_feed(hours=30) + burst("ACME", T0 + 26 * 3600)
    feed = write_feed(tmp_path / "feed.jsonl", recs)
    cfg = MonitorConfig(alerts_jsonl=tmp_path / "alerts.jsonl")

    def boom(_: dict[str, Any]) -> None:
        raise RuntimeError("printer on fire")

    with pytest.raises(RuntimeError):
        run_monitor(model, feed, tmp_path / "m.db", config=cfg, on_alert=boom)
    assert not (tmp_path / "alerts.jsonl").exists()
    s = run_monitor(model, feed, tmp_path / "m.db", config=cfg)  # delivers the committed alert first
    assert s.alerts == 1 and len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 1


def test_bad_lines_are_reported_with_line_numbers(tmp_path: Path, model: TextClassifier):
    good = calm_feed(hours=1, entities=("ACME",))
    lines = [json.dumps(good[0] | {"ts": "2024-03-01T00:00:00Z"}),
             '{"id": "x1", "ts": "2024-03-01T00:01:00Z", "text": "broken',                       # 2 malformed
             json.dumps({"id": "x2", "text": "no time"}),                                         # 3 missing ts
             json.dumps({"id": "x3", "ts": "last tuesday", "text": "good"}),                      # 4 bad ts
             "[1, 2]",                                                                            # 5 not an object
             json.dumps({"id": "x4", "ts": "2024-03-01T00:02:00Z", "text": "good", "entity": 7}),  # 6 bad entity
             "",                                                                                  # 7 blank: ignored
             json.dumps({"id": "x5", "ts": "2024-03-01T00:05:00Z", "text": "great", "entity": "ACME"}),
             json.dumps({"id": "x6", "ts": "2024-02-29T23:00:00Z", "text": "bad", "entity": "ACME"}),  # 9 out of order
             ]
    feed = tmp_path / "bad.jsonl"
    feed.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe not utf8\n")        # 10 not UTF-8
    issues: list[Any] = []
    s = run_monitor(model, feed, tmp_path / "m.db", on_issue=issues.append)
    where = {(i.kind, i.line) for i in issues}
    assert where == {("malformed_json", 2), ("missing_field", 3), ("bad_timestamp", 4), ("not_an_object", 5),
                     ("bad_field", 6), ("out_of_order", 9), ("not_utf8", 10)}
    assert all(str(feed) in str(i) for i in issues)
    assert "'ts'" in next(i.message for i in issues if i.kind == "missing_field")
    assert s.skipped == {"bad_field": 1, "bad_timestamp": 1, "malformed_json": 1, "missing_field": 1,
                         "not_an_object": 1, "not_utf8": 1}
    assert (s.lines, s.records, s.stored, s.out_of_order) == (10, 3, 3, 1)


def test_config_errors_say_the_fix(tmp_path: Path, model: TextClassifier):
    feed = write_feed(tmp_path / "f.jsonl", calm_feed(hours=1))
    with pytest.raises(ConfigError, match="its labels are negative, positive"):
        run_monitor(model, feed, tmp_path / "m.db", config=MonitorConfig(negative_label="bearish"))
    with pytest.raises(DataError, match="not found"):
        run_monitor(model, tmp_path / "missing.jsonl", tmp_path / "m.db")
    with pytest.raises(ConfigError, match="http"):
        run_monitor(model, feed, tmp_path / "m.db", config=MonitorConfig(webhook="ftp://x"))
    other = TextClassifier("sparse").fit(["good", "fine", "bad", "awful"], ["up", "up", "negative", "negative"])
    run_monitor(model, feed, tmp_path / "m.db")
    with pytest.raises(ConfigError, match="new --db"):
        run_monitor(other, feed, tmp_path / "m.db")
    with pytest.raises(ConfigError, match="--step 900s"):
        run_monitor(model, feed, tmp_path / "m.db", config=MonitorConfig(rule=AlertRule(step="10m")))
    with pytest.raises(ConfigError, match="multiples of the step"):
        run_monitor(model, feed, tmp_path / "m2.db", config=MonitorConfig(rule=AlertRule(window="50m", step="15m")))


def test_process_worker_gives_the_same_database(tmp_path: Path, model_dir: Path):
    """--predict-workers 1 (model loaded in a worker process) stores exactly what the thread mode stores."""
    recs = calm_feed(hours=30) + burst("ACME", T0 + 26 * 3600)
    feed = write_feed(tmp_path / "feed.jsonl", recs)
    rows = {}
    for workers in (0, 1):
        db = tmp_path / f"w{workers}.db"
        s = run_monitor(model_dir, feed, db, config=MonitorConfig(predict_workers=workers, batch_size=64))
        assert s.stored == len(recs) and s.alerts == 1
        with sqlite3.connect(db) as c:
            rows[workers] = c.execute("SELECT id, label, round(p_negative, 6) FROM monitor_docs ORDER BY id").fetchall()
    assert rows[0] == rows[1]


# -- webhook against a real HTTP server on loopback ------------------------------------------------
class _Hook(BaseHTTPRequestHandler):
    fail_first = 0
    bodies: list[dict[str, Any]] = []
    calls = 0

    def do_POST(self) -> None:  # noqa: N802
        cls = type(self)
        cls.calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if cls.calls <= cls.fail_first:
            self.send_response(503)
            self.end_headers()
            return
        cls.bodies.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server():
    handler = type("Hook", (_Hook,), {"fail_first": 2, "bodies": [], "calls": 0})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/alerts", handler
    srv.shutdown()
    srv.server_close()


def test_webhook_retries_then_delivers_and_unreachable_is_counted(tmp_path: Path, model: TextClassifier, hook_server):
    url, handler = hook_server
    recs = calm_feed(hours=30) + burst("ACME", T0 + 26 * 3600)
    feed = write_feed(tmp_path / "feed.jsonl", recs)
    cfg = MonitorConfig(webhook=url, webhook_backoff=0.01, webhook_retries=3)
    s = run_monitor(model, feed, tmp_path / "ok.db", config=cfg)
    assert (s.alerts, s.webhook_sent, s.webhook_failed) == (1, 1, 0)
    assert handler.calls == 3 and handler.bodies[0]["entity"] == "ACME"  # two 503s, then delivered
    # nothing listens on this port: the run completes, counts the failure and stores why
    dead = f"http://127.0.0.1:{free_port()}/alerts"
    s = run_monitor(model, feed, tmp_path / "dead.db", config=MonitorConfig(webhook=dead, webhook_backoff=0.01,
                                                                           webhook_retries=2, webhook_timeout=1))
    assert (s.alerts, s.webhook_sent, s.webhook_failed, s.stored) == (1, 0, 1, len(recs))
    store = open_store(tmp_path / "dead.db")
    assert store.all_alerts()[0]["webhook"].startswith("failed after 3 attempts")
    store.close()


def test_webhook_timeout_and_client_error_are_not_crashes(hook_server):
    url, handler = hook_server

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            time.sleep(1.0)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        ok, what, attempts = post_webhook(f"http://127.0.0.1:{srv.server_address[1]}/", {"a": 1}, timeout=0.2,
                                          retries=1, backoff=0.01)
        assert not ok and attempts == 2 and "timed out" in what
    finally:
        srv.shutdown()
        srv.server_close()
    handler.fail_first = 0
    ok, what, attempts = post_webhook(url.replace("/alerts", "/x"), {"a": 1}, retries=2, backoff=0.01)
    assert ok and attempts == 1


# -- report and CLI -------------------------------------------------------------------------------
def _app():
    from niche.cli import app

    return app


def test_report_writes_png_and_html(tmp_path: Path, model: TextClassifier, db_url: str):
    recs = calm_feed(hours=30) + burst("ACME", T0 + 26 * 3600)
    feed = write_feed(tmp_path / "feed.jsonl", recs)
    run_monitor(model, feed, db_url)
    res = CliRunner().invoke(_app(), ["monitor", "report", "--db", db_url, "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    for e in ("ACME", "BETA"):
        assert (tmp_path / "rep" / f"{e}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"{e}.png" in (tmp_path / "rep" / f"{e}.html").read_text()
    assert "<td>20/" not in (tmp_path / "rep" / "BETA.html").read_text()
    assert "No alerts" not in (tmp_path / "rep" / "ACME.html").read_text()
    index = (tmp_path / "rep" / "index.html").read_text()
    assert "ACME.html" in index and "BETA.html" in index
    res = CliRunner().invoke(_app(), ["monitor", "report", "--db", str(tmp_path / "empty.db"), "--out", str(tmp_path / "r2")])
    assert res.exit_code == 2 and "monitor run" in res.output


def test_cli_run_file_and_stdin(tmp_path: Path, model_dir: Path):
    recs = calm_feed(hours=30) + burst("ACME", T0 + 26 * 3600)
    feed = write_feed(tmp_path / "feed.jsonl", recs)
    db = tmp_path / "m.db"
    args = ["monitor", "run", "--model", str(model_dir), "--db", str(db), "--alerts-jsonl", str(tmp_path / "a.jsonl")]
    res = CliRunner().invoke(_app(), args + ["--input", str(feed)])
    assert res.exit_code == 0, res.output
    assert "ALERT ACME" in res.stdout and "stored" in res.stdout
    # follow mode: lines on stdin, with entities from the watch list
    lines = "\n".join(json.dumps({"id": f"s{i}", "ts": T0 + 40 * 3600 + i, "text": f"Acme Corp looks {w}"})
                      for i, w in enumerate(["good", "bad", "great"])) + "\n"
    res = CliRunner().invoke(_app(), args + ["--input", "-", "--entities", "ACME=Acme Corp,BETA", "--json"], input=lines)
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout[res.stdout.index("{"):])
    assert (s["stored"], s["mentions"], s["no_entity"]) == (3, 3, 0)
    res = CliRunner().invoke(_app(), args + ["--input", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 2 and "not found" in res.output
    res = CliRunner().invoke(_app(), args + ["--input", str(feed), "--window", "soon"])
    assert res.exit_code == 2 and "duration" in res.output


# -- real text: Financial PhraseBank replay --------------------------------------------------------
@pytest.mark.skipif(not (PHRASEBANK / "50agree_train.csv").is_file(),
                    reason="Financial PhraseBank not in ../shared/data/financial_phrasebank (real-data replay test)")
def test_phrasebank_replay_burst_detected_no_false_alerts(tmp_path: Path):
    from niche.apps.monitor.demo import WATCH_LIST, build_replay, phrasebank_split

    train, pool = phrasebank_split(PHRASEBANK)
    assert not {t for t, _ in train} & {t for t, _ in pool}
    rows = random.Random(0).sample(train, 1500)
    clf = TextClassifier("sparse").fit([t for t, _ in rows], [lab for _, lab in rows])
    replay = build_replay(pool, n_calm=1500, seed=1, shuffle_lines=20)
    feed = replay.write(tmp_path / "feed.jsonl")
    s = run_monitor(clf, feed, tmp_path / "m.db", entities=WATCH_LIST)
    assert s.out_of_order > 0 and s.no_entity > 0
    store = open_store(tmp_path / "m.db")
    score = replay.score(store.all_alerts(), 3600_000)
    assert score["detected"] and score["false_alerts"] == 0, score
    # watch-list matching on real sentences: every 'Nokia' text without an entity field is a Nokia
    # mention, and 'Nokian' (a different company) is not
    import re

    with store.engine.connect() as conn:
        nokia = {r[0] for r in conn.execute(mentions.select().with_only_columns(mentions.c.doc_id)
                                            .where(mentions.c.entity == "Nokia"))}
    store.close()
    expected = {r["id"] for r in replay.records if "entity" not in r and re.search(r"(?<!\w)nokia(?!\w)", r["text"], re.I)}
    assert expected and nokia == expected
