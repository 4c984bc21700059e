"""Monitor benchmark: burst detection on a Financial PhraseBank replay, and ingestion
throughput against the model's own prediction speed, in one run.

    python benchmarks/monitor.py                      # sparse model (needs ../shared/data)
    python benchmarks/monitor.py --transformer        # also a fine-tuned MiniLM (slow on 2 cores)
    python benchmarks/monitor.py --detect-compare --first-seed 300 --seeds 40
        # sparse vs MiniLM: alpha chosen on tuning replays 100-119, scored on fresh replays 300-339

1. Train the sparse model on the PhraseBank train part (niche.apps.monitor.demo.phrasebank_split:
   50agree_train minus a sha1 quarter); score it on the held-out replay pool.
2. Detection, per seed: a timeline of 6,000 calm pool sentences (drawn with replacement, ~30 per
   hour over ~8 days, 5 synthetic tickers + 20 % matched by a watch list of real company names)
   with 30 distinct gold-negative pool sentences attached to one ticker within one hour. Ingest with
   the default rule into SQLite; an alert is a hit if its entity is the burst's and its window
   overlaps the burst, anything else is a false alert. The default rule (binomial, alpha 1e-4, >= 6
   negatives in the window) and three others for comparison. The defaults were chosen on seeds 0-5
   and 100-119; the reported replays use seeds 200-219, not looked at before.
3. Throughput: a busier 40,000-text feed (~300 per hour). Interleaved, `--repeats` times: the
   model's predict_proba alone on the same texts in batches of 256, then `run_monitor` end to end
   (read, parse, predict, SQLite, alert rule) into a fresh database, with prediction in a thread and
   in a separate process. Medians; ratio = ingestion texts/s / predict_proba texts/s. Also the
   database stage alone (texts / seconds inside the batch transactions: inserts, progress, alert
   rule, commit), to show whether the database is the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import RESULTS, ROOT, load_result, result_path, save_result, stamp

sys.path.insert(0, str(ROOT / "src"))


@contextmanager
def _part() -> Iterator[tuple[dict, Path]]:
    """For a part run on its own: the existing results/monitor.json and a scratch folder; the
    result is written back when the part succeeds."""
    res = load_result("monitor")
    if res is None:
        sys.exit(f"{result_path('monitor')} missing: run `python benchmarks/monitor.py` first")
    work = Path(tempfile.mkdtemp(prefix="niche-monitor-bench-"))
    try:
        yield res, work
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save_result("monitor", res, stamped=False)


def detection(clf, pool, seeds: list[int], work: Path, only_default: bool = False, rules: dict | None = None) -> dict:
    from niche.apps.monitor import WATCH_LIST, AlertRule, MonitorConfig, build_replay, open_store, run_monitor

    if rules is None:
        rules = {"default (binomial, alpha 1e-4, >= 6 negatives)": AlertRule(),
                 "binomial, alpha 1e-3, >= 5 negatives": AlertRule(alpha=1e-3, min_negatives=5),
                 "binomial, alpha 1e-5, >= 5 negatives": AlertRule(alpha=1e-5, min_negatives=5),
                 "z-test, alpha 1e-3, >= 5 negatives": AlertRule(alpha=1e-3, test="ztest", min_negatives=5)}
    if only_default:
        rules = dict(list(rules.items())[:1])
    out: dict = {name: {"runs": []} for name in rules}
    work = Path(tempfile.mkdtemp(prefix="detection-", dir=work))  # fresh databases for every call (ingestion is idempotent)
    for seed in seeds:
        replay = build_replay(pool, n_calm=6000, seed=seed)
        feed = replay.write(work / f"replay-{seed}.jsonl")
        for name, rule in rules.items():
            db = work / f"replay-{seed}-{len(out[name]['runs'])}-{abs(hash(name)) % 10**6}.db"
            s = run_monitor(clf, feed, db, entities=WATCH_LIST, config=MonitorConfig(rule=rule))
            store = open_store(db)
            score = replay.score(store.all_alerts(), rule.ms("window"))
            store.close()
            out[name]["runs"].append({"seed": seed, **score, "calm_sentences": replay.n_calm, "days": replay.info["days"],
                                      "texts_per_s": round(s.texts_per_s, 1), "mentions": s.mentions,
                                      "watch_list_mentions": s.mentions - (s.records - s.no_entity)})
        print(f"  seed {seed}: " + "; ".join(f"{n}: detected={r['runs'][-1]['detected']} "
                                              f"min={r['runs'][-1]['minutes_to_alert']} false={r['runs'][-1]['false_alerts']}"
                                              for n, r in out.items()), flush=True)
    for r in out.values():
        runs = r["runs"]
        r["detected"] = sum(x["detected"] for x in runs)
        r["false_alerts"] = sum(x["false_alerts"] for x in runs)
        r["calm_sentences"] = sum(x["calm_sentences"] for x in runs)
        mins = [x["minutes_to_alert"] for x in runs if x["minutes_to_alert"] is not None]
        r["minutes_to_alert_median"] = statistics.median(mins) if mins else None
        r["minutes_to_alert_max"] = max(mins) if mins else None
    return out


def throughput(clf, model_dir: Path, pool, work: Path, repeats: int, n: int = 40000, label: str = "sparse") -> dict:
    from niche.apps.monitor import WATCH_LIST, MonitorConfig, build_replay, run_monitor

    replay = build_replay(pool, n_calm=n, per_hour=300, seed=123)
    feed = replay.write(work / f"throughput-{label}.jsonl")
    texts = [r["text"] for r in replay.records]
    res: dict = {"texts": len(texts), "batch_size": 256, "predict": [], "ingest_thread": [], "ingest_process": []}
    for rep in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(texts), 256):
            clf.predict_proba(texts[i:i + 256])
        res["predict"].append(len(texts) / (time.perf_counter() - t0))
        for mode, workers in (("ingest_thread", 0), ("ingest_process", 1)):
            db = work / f"tp-{label}-{rep}-{workers}.db"
            s = run_monitor(model_dir, feed, db, entities=WATCH_LIST, config=MonitorConfig(predict_workers=workers))
            assert s.stored == len(texts), s
            res[mode].append(s.texts_per_s)
            res.setdefault(mode.replace("ingest", "db_stage"), []).append(s.records / s.db_seconds)
        print(f"  [{label}] repeat {rep}: predict {res['predict'][-1]:.0f}/s, ingest thread "
              f"{res['ingest_thread'][-1]:.0f}/s, process {res['ingest_process'][-1]:.0f}/s", flush=True)
    for k in ("predict", "ingest_thread", "ingest_process", "db_stage_thread", "db_stage_process"):
        res[k] = [round(v, 1) for v in res[k]]
        res[k + "_median"] = round(statistics.median(res[k]), 1)
    res["ratio_thread"] = round(res["ingest_thread_median"] / res["predict_median"], 3)
    res["ratio_process"] = round(res["ingest_process_median"] / res["predict_median"], 3)
    res["ratio_best"] = max(res["ratio_thread"], res["ratio_process"])
    return res


def fit_transformer(train, pool, **params) -> tuple:
    """MiniLM fine-tuned on the PhraseBank train part (3 epochs, max_len 64) and its pool metrics."""
    from niche import TextClassifier

    print("training the transformer ...", flush=True)
    tr = TextClassifier("transformer", epochs=3, max_len=64, **params).fit(
        [t for t, _ in train], [lab for _, lab in train], progress=True)
    m = tr.evaluate([t for t, _ in pool], [lab for _, lab in pool])
    info = {"pool_accuracy": m["accuracy"], "pool_macro_f1": m["macro"]["f1"],
            "negative_recall": m["per_class"]["negative"]["recall"], "train_seconds": tr.info_["training"]["seconds"],
            "base": "all-MiniLM-L6-v2", "max_len": 64, "epochs": 3}
    return tr, info


def transformer_part(train, pool, work: Path) -> tuple[dict, dict]:
    tr, info = fit_transformer(train, pool)
    return info, throughput(tr, tr.save(work / "transformer"), pool, work, 1, n=4000, label="transformer")


def add_transformer() -> None:
    from niche.apps.monitor import phrasebank_split

    train, pool = phrasebank_split()
    t0 = time.perf_counter()
    with _part() as (res, work):
        res["models"]["transformer"], res["throughput"]["transformer"] = transformer_part(train, pool, work)
        res["transformer_added"] = stamp() | {"wall_s": round(time.perf_counter() - t0, 1)}
    print(f"added the transformer to {result_path('monitor')}")


def detect_transformer(first_seed: int, n_seeds: int) -> None:
    """The detection part with a fine-tuned MiniLM (default rule only), added to results/monitor.json."""
    from niche.apps.monitor import phrasebank_split

    train, pool = phrasebank_split()
    t0 = time.perf_counter()
    with _part() as (res, work):
        tr, res["models"]["transformer"] = fit_transformer(train, pool, precision="bf16")
        print("transformer pool", res["models"]["transformer"], flush=True)
        det = detection(tr, pool, list(range(first_seed, first_seed + n_seeds)), work, only_default=True)
        D = next(iter(det.values()))
        res["detection_transformer"] = D | stamp() | {"seeds": [first_seed, first_seed + n_seeds - 1],
                                                      "wall_s": round(time.perf_counter() - t0, 1)}
    print(f"transformer detection: {D['detected']}/{len(D['runs'])}, false alerts {D['false_alerts']}")


def memoize_pool(clf, texts: list[str]):
    """Score the replay pool once and answer predict_proba from that table (the replays draw every
    sentence from the pool, so this changes no prediction, only how often the model runs)."""
    import numpy as np

    uniq = sorted(set(texts))
    table = dict(zip(uniq, clf.predict_proba(uniq, batch_size=64)))
    model_predict = clf.predict_proba

    def predict_proba(x, **kw):
        batch = [x] if isinstance(x, str) else list(x)
        missing = sorted({t for t in batch if t not in table})
        if missing:
            table.update(zip(missing, model_predict(missing, **kw)))
        out = np.stack([table[t] for t in batch])
        return out[0] if isinstance(x, str) else out

    clf.predict_proba = predict_proba  # this instance only
    return clf


# Candidate rules of --detect-compare, most sensitive first. All share the defaults but alpha.
COMPARE_ALPHAS = [1e-4, 1e-5, 1e-6, 1e-7]


def detect_compare(tune_seeds: list[int], eval_seeds: list[int]) -> None:
    """Sparse vs fine-tuned MiniLM with the default rule and stricter alphas: each model's alpha is
    chosen on the tuning replays (the largest alpha that finds every burst with no false alert there),
    then both the default and the chosen rule are scored on fresh replays not looked at before."""
    from niche import TextClassifier
    from niche.apps.monitor import AlertRule, phrasebank_split

    train, pool = phrasebank_split()
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    names = {a: f"binomial, alpha {a:.0e}, >= 6 negatives" + (" (default)" if a == AlertRule().alpha else "")
             for a in COMPARE_ALPHAS}
    rules = {names[a]: AlertRule(alpha=a) for a in COMPARE_ALPHAS}
    out: dict = stamp() | {"tune_seeds": [tune_seeds[0], tune_seeds[-1]], "eval_seeds": [eval_seeds[0], eval_seeds[-1]],
                           "models": {}}
    with _part() as (res, work):
        sparse = TextClassifier("sparse").fit([t for t, _ in train], [lab for _, lab in train])
        m = sparse.evaluate([t for t, _ in pool], [lab for _, lab in pool])
        minilm, minfo, _ = cached_minilm(train, pool)
        infos = {"sparse": {"pool_accuracy": m["accuracy"], "pool_macro_f1": m["macro"]["f1"],
                            "negative_recall": m["per_class"]["negative"]["recall"],
                            "negative_precision": m["per_class"]["negative"]["precision"]},
                 "MiniLM": minfo | {"negative_precision": minilm.evaluate(
                     [t for t, _ in pool], [lab for _, lab in pool])["per_class"]["negative"]["precision"]}}
        for name, clf in (("sparse", sparse), ("MiniLM", minilm)):
            memoize_pool(clf, [t for t, _ in pool])
            print(f"[{name}] tuning replays {tune_seeds[0]}-{tune_seeds[-1]} ...", flush=True)
            tune = detection(clf, pool, tune_seeds, work, rules=rules)
            ok = [a for a in COMPARE_ALPHAS if tune[names[a]]["detected"] == len(tune_seeds)
                  and tune[names[a]]["false_alerts"] == 0]
            chosen = ok[0] if ok else max(COMPARE_ALPHAS, key=lambda a: tune[names[a]]["detected"] - tune[names[a]]["false_alerts"])
            final = {names[AlertRule().alpha]: rules[names[AlertRule().alpha]], names[chosen]: rules[names[chosen]]}
            print(f"[{name}] chosen alpha {chosen:.0e}; fresh replays {eval_seeds[0]}-{eval_seeds[-1]} ...", flush=True)
            ev = detection(clf, pool, eval_seeds, work, rules=final)
            strip = lambda d: {k: {kk: vv for kk, vv in v.items() if kk != "runs"} | {  # noqa: E731
                "misses": [r["seed"] for r in v["runs"] if not r["detected"]],
                "false_alert_seeds": [r["seed"] for r in v["runs"] if r["false_alerts"]],
                "false_alert_list": [a | {"seed": r["seed"]} for r in v["runs"] for a in r["false_alert_list"]],
                "replays": len(v["runs"])} for k, v in d.items()}
            out["models"][name] = infos[name] | {"tuning": strip(tune), "chosen_alpha": chosen,
                                                 "chosen_rule": names[chosen], "eval": strip(ev)}
        out["wall_s"] = round(time.perf_counter() - t0, 1)
        out["load_average_start_end"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        res["detection_compare"] = out
    for name, r in out["models"].items():
        e = r["eval"][r["chosen_rule"]]
        print(f"{name}: chosen {r['chosen_rule']}: fresh {e['detected']}/{e['replays']}, false alerts {e['false_alerts']}")


def cached_minilm(train, pool):
    """The MiniLM of --detect-compare (results/work/monitor-minilm, gitignored), trained if missing."""
    from niche import TextClassifier

    cached = RESULTS / "work" / "monitor-minilm"  # delete it to retrain
    if (cached / "niche.json").is_file():
        return TextClassifier.load(cached), json.loads((cached / "pool_metrics.json").read_text()), cached
    minilm, minfo = fit_transformer(train, pool, precision="bf16")
    minilm.save(cached)
    (cached / "pool_metrics.json").write_text(json.dumps(minfo, indent=2))
    return minilm, minfo, cached


def throughput_transformer(repeats: int) -> None:
    """Ingestion vs predict_proba with the fine-tuned MiniLM (4,000 texts), added to results/monitor.json."""
    from niche.apps.monitor import phrasebank_split

    train, pool = phrasebank_split()
    minilm, _, model_dir = cached_minilm(train, pool)
    load0 = os.getloadavg()[0]
    with _part() as (res, work):
        tp = throughput(minilm, model_dir, pool, work, repeats, n=4000, label="transformer")
        tp["rerun"] = stamp() | {"load_average_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)]}
        res["throughput"]["transformer"] = tp
    print(f"transformer ingestion ratio thread {tp['ratio_thread']} / process {tp['ratio_process']}")


def rerun_throughput(repeats: int) -> None:
    from niche import TextClassifier
    from niche.apps.monitor import phrasebank_split

    train, pool = phrasebank_split()
    load0 = os.getloadavg()[0]
    with _part() as (res, work):
        clf = TextClassifier("sparse").fit([t for t, _ in train], [lab for _, lab in train])
        res["throughput"]["sparse"] = throughput(clf, clf.save(work / "sparse"), pool, work, repeats)
        res["throughput"]["sparse"]["rerun"] = stamp() | {
            "load_average_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    print(f"updated the sparse throughput in {result_path('monitor')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20, help="replays for the detection part")
    ap.add_argument("--first-seed", type=int, default=200,
                    help="seeds 0-5 and 100-119 were used to choose the defaults; the reported replays start here")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the throughput part")
    ap.add_argument("--transformer", action="store_true", help="also measure throughput with a fine-tuned MiniLM")
    ap.add_argument("--add-transformer", action="store_true",
                    help="only the transformer part, added to an existing results/monitor.json")
    ap.add_argument("--throughput-only", action="store_true",
                    help="rerun only the sparse throughput part, updating an existing results/monitor.json")
    ap.add_argument("--detect-transformer", action="store_true",
                    help="only the detection part with a fine-tuned MiniLM (default rule), added to results/monitor.json")
    ap.add_argument("--detect-compare", action="store_true",
                    help="sparse vs MiniLM, alpha chosen on tuning replays (--tune-seeds from 100), scored on fresh "
                         "replays (--seeds from --first-seed); added to results/monitor.json")
    ap.add_argument("--tune-first-seed", type=int, default=100)
    ap.add_argument("--tune-seeds", type=int, default=20)
    ap.add_argument("--throughput-transformer", action="store_true",
                    help="only the throughput part with the fine-tuned MiniLM, added to results/monitor.json")
    a = ap.parse_args()
    if a.throughput_transformer:
        throughput_transformer(a.repeats)
        return
    if a.detect_compare:
        detect_compare(list(range(a.tune_first_seed, a.tune_first_seed + a.tune_seeds)),
                       list(range(a.first_seed, a.first_seed + a.seeds)))
        return
    if a.detect_transformer:
        detect_transformer(a.first_seed, a.seeds)
        return
    if a.add_transformer:
        add_transformer()
        return
    if a.throughput_only:
        rerun_throughput(a.repeats)
        return
    from niche import TextClassifier
    from niche.apps.monitor import phrasebank_split

    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    train, pool = phrasebank_split()
    work = Path(tempfile.mkdtemp(prefix="niche-monitor-bench-"))
    try:
        print(f"train {len(train)} sentences, replay pool {len(pool)}")
        clf = TextClassifier("sparse").fit([t for t, _ in train], [lab for _, lab in train])
        pool_metrics = clf.evaluate([t for t, _ in pool], [lab for _, lab in pool])
        model_dir = clf.save(work / "sparse")
        print("detection ...")
        det = detection(clf, pool, list(range(a.first_seed, a.first_seed + a.seeds)), work)
        print("throughput (sparse) ...")
        tp = {"sparse": throughput(clf, model_dir, pool, work, a.repeats)}
        models = {"sparse": {"pool_accuracy": pool_metrics["accuracy"], "pool_macro_f1": pool_metrics["macro"]["f1"],
                             "negative_recall": pool_metrics["per_class"]["negative"]["recall"]
                             if "per_class" in pool_metrics else None,
                             "train_seconds": clf.info_["training"]["seconds"]}}
        if a.transformer:
            models["transformer"], tp["transformer"] = transformer_part(train, pool, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = {"seeds": [a.first_seed, a.first_seed + a.seeds - 1],
           "load_average_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)],
           "train_sentences": len(train), "pool_sentences": len(pool), "models": models, "detection": det,
           "throughput": tp, "wall_s": round(time.perf_counter() - t_start, 1)}
    print(f"written {save_result('monitor', res)} in {res['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
