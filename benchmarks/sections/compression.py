"""Compression (benchmarks/compress.py): ONNX export, int8, distilled students, against the fp32 teacher.

A dataset without results/compress-NAME.json keeps its subsection and floor rows from the existing
BENCHMARKS.md (each subsection's heading carries the date of its run).
"""

from __future__ import annotations

import json
from pathlib import Path

from _common import Floor, Keep, load_result, missing

HEADING = "## Compression: export, int8, distillation"
DATASETS = ("banking77", "imdb", "sst2")
INT8_FLOOR = "{}: int8 >= 1.5 x fp32 docs/s, <= 0.5 point drop"
STUDENT_FLOOR = "{}: layers:3 student >= 1.8 x teacher docs/s (fp32), <= 1.5 point drop"
SPARSE_FLOOR = "distilled sparse student beats label-trained sparse on >= 2 of IMDB, SST-2, banking77"


def _labels(name: str) -> list[str]:
    return ([INT8_FLOOR.format(name)] if name in ("banking77", "imdb") else []) + [STUDENT_FLOOR.format(name)]


def _refused(R: dict, lines: list[str]) -> dict[str, tuple[dict, dict]]:
    """Rows for refused results: the guard's own measurement (source vs result)."""
    out = {}
    for k, v in R["steps"].items():
        rp = Path(v["dir"] + ".refused") / "compression_report.json"
        if v["passed"] is False and rp.exists():
            rr = json.loads(rp.read_text())["models"]
            src, res = rr["source"], [x for n, x in rr.items() if n != "source"][0]
            out[k] = (res, src)
            lines.append(f"| {k} (**refused**, guard run) | {100 * res['accuracy']:.2f} | {100 * res['macro_f1']:.2f} | "
                         f"{res['docs_per_s']:.1f} | {res['docs_per_s'] / src['docs_per_s']:.2f} | {res['p50_ms']:.1f} | "
                         f"{res['size_mb']:.1f} |")
    return out


def _verdict(k: str, v: dict) -> str:
    how = "passed" if v["passed"] else ("refused (" + "; ".join(v["reasons"]) + ")" if v["passed"] is False else "n/a")
    return f"{k}: {how} in {v['seconds']:.0f} s" + (" (built by an earlier run, re-measured here)" if v.get("reused") else "")


def _dataset(name: str, R: dict) -> tuple[list[str], list[Floor]]:
    M = R["models"]
    t = M["teacher fp32 (PyTorch)"]
    sp_ = R.get("student_params", {})
    lines = [f"### {name} ({R['eval']}, {R['n_eval']} texts; students trained on {R['n_train']} labeled"
             + (f" + {R['n_transfer']} unlabeled transfer" if R["n_transfer"] else "") + " texts"
             + (f", layers:3 student {sp_['epochs']} epochs {sp_.get('precision', 'fp32')}" if sp_ else "")
             + f"; {R['date']}; speed: median of {R.get('speed_rounds', 3)} rounds)", "",
             "| model | accuracy | macro-F1 | docs/s | x teacher | p50 ms | size MB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m, r in M.items():
        lines.append(f"| {m} | {100 * r['accuracy']:.2f} | {100 * r['macro_f1']:.2f} | {r['docs_per_s']:.1f} | "
                     f"{r['docs_per_s'] / t['docs_per_s']:.2f} | {r['p50_ms']:.1f} | {r['size_mb']:.1f} |")
    refused = _refused(R, lines)
    lines.append("")
    for k, c in R.get("int8_choice", {}).items():
        how = (f", chosen on {c['calibration_texts']} dev texts where it agreed with fp32 on "
               f"{100 * c['agreement']:.2f} % of labels" if c.get("agreement") is not None else "")
        lines.append(f"{k}: {c['level']} ({c['method']}){how}.")
    fused = {k: v for k, v in R.get("fusion", {}).items() if v and v.get("fused")}
    if fused:
        ops = next(iter(fused.values()))["operators"]
        lines.append("ONNX graphs fused by onnxruntime's transformer optimizer (" + ", ".join(
            f"{n} x{c}" for n, c in ops.items()) + " for the teacher).")
    lines += ["", "Guard verdicts: " + "; ".join(_verdict(k, v) for k, v in R["steps"].items()) + ".", ""]
    floors: list[Floor] = []
    if name in ("banking77", "imdb"):
        best = M.get("teacher int8 (ONNX)")
        if best:
            sp, drop = best["docs_per_s"] / t["docs_per_s"], 100 * (t["accuracy"] - best["accuracy"])
            floors.append((INT8_FLOOR.format(name), f"{sp:.2f}x, drop {drop:.2f}", sp >= 1.5 and drop <= 0.5))
        else:
            floors.append((INT8_FLOOR.format(name), "int8 refused by the guard", False))
    elif "teacher int8" in refused:
        res, src = refused["teacher int8"]
        lines += [f"{name}: int8 is {res['docs_per_s'] / src['docs_per_s']:.2f}x the fp32 source, accuracy "
                  f"{100 * res['accuracy']:.2f} vs {100 * src['accuracy']:.2f} %, but fails the 99.5 % "
                  "label-parity rule, so the guard refused it (no floor for this dataset).", ""]
    s3 = M.get("student layers:3 fp32")
    if s3:
        sp, drop = s3["docs_per_s"] / t["docs_per_s"], 100 * (t["accuracy"] - s3["accuracy"])
        floors.append((STUDENT_FLOOR.format(name), f"{sp:.2f}x, drop {drop:.2f}", sp >= 1.8 and drop <= 1.5))
    elif "student layers:3" in refused:
        res, src = refused["student layers:3"]
        sp, drop = res["docs_per_s"] / src["docs_per_s"], 100 * (src["accuracy"] - res["accuracy"])
        floors.append((STUDENT_FLOOR.format(name), f"{sp:.2f}x, drop {drop:.2f} (refused by the guard)", False))
    else:
        floors.append((STUDENT_FLOOR.format(name), "not run", None))
    return lines, floors


def section(results: Path) -> tuple[list, list[Floor]]:
    runs = {n: R for n in DATASETS if (R := load_result(f"compress-{n}", results)) is not None}
    if not runs:
        return [Keep(HEADING)], [missing(f) for n in DATASETS for f in _labels(n)] + [missing(SPARSE_FLOOR)]
    lines: list = [HEADING, "",
                   "Generated by `python benchmarks/compress.py` (see its docstring for the protocol). All models of a "
                   "table were measured together on the evaluation set, speed rounds interleaved: docs/s at batch 32 "
                   "(median of " + "/".join(str(n) for n in sorted({R.get("speed_rounds", 3) for R in runs.values()}))
                   + " rounds over 512 texts, rounds per table below), p50 ms for one text at batch 1 (50 texts), "
                   "default threads (2).", ""]
    floors: list[Floor] = []
    sparse_wins = []
    for name in DATASETS:
        if name not in runs:
            lines.append(Keep(f"### {name} ("))
            floors += [missing(f) for f in _labels(name)]
            continue
        block, f = _dataset(name, runs[name])
        lines += block
        floors += f
        sd, sl = runs[name]["models"].get("sparse student (distilled)"), runs[name]["models"].get("sparse (labels only)")
        if sd and sl:
            sparse_wins.append((name, sd["accuracy"] > sl["accuracy"], sd["accuracy"], sl["accuracy"]))
    if len(runs) < len(DATASETS):  # judged over the three datasets of one run: kept with the others
        floors.append(missing(SPARSE_FLOOR))
    elif sparse_wins:
        n = sum(w for _, w, _, _ in sparse_wins)
        floors.append((SPARSE_FLOOR, "; ".join(f"{k}: {100 * a:.2f} vs {100 * b:.2f}" for k, _, a, b in sparse_wins),
                       n >= 2 if len(sparse_wins) == 3 or n >= 2 else None))
    return lines, floors
