"""The reliability campaign of issue 18 in one command, and its figures in BENCHMARKS.md.

    python benchmarks/reliability.py            # the whole campaign (~1 h on 2 busy cores), then renders
    python benchmarks/reliability.py --no-slow  # without the 20-kill run (~15 min)
    python benchmarks/reliability.py --render   # only re-render BENCHMARKS.md from results/reliability.json
    python benchmarks/reliability.py --collect WORK  # re-read the figures of a finished run (its --work folder)

It runs, through pytest with a JUnit report, the suite's reliability tests as they are:

- ``tests/serving/test_fuzz.py``: schemathesis against a real ``niche serve`` without and with an API key
  (all checks, examples/coverage/fuzzing/stateful phases); its per-run summaries ("N generated, N passed"
  or "... found K unique failures") are read from the test's output files;
- ``tests/serving/test_hostile.py`` and ``tests/serving/test_openapi.py``: hand-made hostile HTTP inputs and
  the OpenAPI against the server's real statuses and limits;
- ``tests/reliability/``: kill -9 of every long job (3 kills per job, and 20 with ``-m slow``; each job's
  kill points are read from the JSON the test writes with ``NICHE_KILL_REPORT``), full disks (real tmpfs
  and injected), hostile and broken model directories, bad data files.

and writes ``benchmarks/results/reliability.json``: per test file the cases run/passed/failed/skipped and
seconds, the fuzz figures, and per job the kill points tried and survived. ``render.py`` turns it into the
"Reliability" section. The exit code is pytest's (the figures are written either way).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, ROOT, save_result  # noqa: E402

TESTS = ["tests/serving/test_fuzz.py", "tests/serving/test_hostile.py", "tests/serving/test_openapi.py",
         "tests/reliability"]


def junit_cases(path: Path) -> list[dict]:
    """Every test case of a JUnit XML report: file, name, outcome, seconds, message of a failure."""
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            el = tc.find(kind)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                if kind == "skipped" and el.get("type") == "pytest.xfail":
                    outcome = "xfailed"  # a known gap, marked in the test
                message = (el.get("message") or "")[:300]
                break
        module = tc.get("classname", "").rsplit(".", 1)
        file = module[0].replace(".", "/") + ".py" if len(module) == 2 and module[1][:1].isupper() \
            else tc.get("classname", "").replace(".", "/") + ".py"
        cases.append({"file": file, "name": tc.get("name", ""), "outcome": outcome,
                      "seconds": round(float(tc.get("time", 0) or 0), 2), "message": message})
    return cases


def by_file(cases: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for c in cases:
        f = out.setdefault(c["file"], {"cases": 0, "passed": 0, "failed": 0, "skipped": 0, "xfailed": 0, "seconds": 0.0,
                                       "known_gaps": []})
        f["cases"] += 1
        f["seconds"] = round(f["seconds"] + c["seconds"], 1)
        f[{"passed": "passed", "skipped": "skipped", "xfailed": "xfailed"}.get(c["outcome"], "failed")] += 1
        if c["outcome"] == "xfailed" and c["message"] not in f["known_gaps"]:
            f["known_gaps"].append(c["message"])
    return out


def schemathesis_summary(text: str) -> dict:
    """The numbers of a ``st run`` report: test cases generated/passed, unique failures, errored, skipped,
    the operations and whether the stateful phase ran."""
    m = re.search(r"Test cases:\s*\n\s*(\d+) generated(.*)", text)
    res: dict = {"generated": int(m[1]) if m else None, "passed": 0, "failures": 0, "errored": 0, "skipped": 0}
    rest = m[2] if m else ""
    if (p := re.search(r"(\d+) passed", rest)):
        res["passed"] = int(p[1])
    if (p := re.search(r"found (\d+) unique failure", rest)):
        res["failures"] = int(p[1])
    for key in ("errored", "skipped"):
        if (p := re.search(rf"(\d+) {key}", rest)):
            res[key] = int(p[1])
    if (p := re.search(r"API Operations:\s*\n\s*Selected: (\d+)/(\d+)", text)):
        res["operations"] = int(p[1])
    res["stateful"] = "Stateful (not applicable)" not in text and bool(re.search(r"✅ +Stateful", text))
    if (p := re.search(r"Scenarios:\s*(\d+)", text)):
        res["stateful_scenarios"] = int(p[1])
    if (p := re.search(r"API Links:\s*(\d+) covered / (\d+) selected", text)):
        res["links_covered"], res["links"] = int(p[1]), int(p[2])
    if (p := re.search(r"^Warnings:\n((?:  .*\n)+)", text, re.M)):
        res["warnings"] = [w.strip().lstrip("⚠️").strip() for w in p[1].splitlines() if w.strip()]
    if (p := re.search(r"^Schema validation mismatch:[^\n]*\n\n((?:  - [^\n]*\n)+)", text, re.M)):
        res["warning_operations"] = [w.strip()[2:] for w in p[1].splitlines() if w.strip()]
    return res


def run_campaign(slow: bool, work: Path) -> tuple[int, dict]:
    junit, kills, base = work / "junit.xml", work / "kills", work / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow or not slow" if slow else "not slow",
           f"--junitxml={junit}", f"--basetemp={base}", "-o", "junit_family=xunit1", *TESTS]
    env = os.environ | {"NICHE_KILL_REPORT": str(kills)}
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    run = {"pytest_exit_code": rc, "slow": slow, "seconds": round(time.monotonic() - t0, 1),
           "load_average_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)],
           "pytest_command": shlex.join(["python", *cmd[1:]]).replace(str(work), "WORK")}
    (work / "run.json").write_text(json.dumps(run))
    return rc, collect(work)


def collect(work: Path) -> dict:
    """The figures of a finished campaign from its work directory (JUnit report, kill records, test outputs)."""
    junit, kills, base = work / "junit.xml", work / "kills", work / "tmp"
    run = json.loads((work / "run.json").read_text())
    cases = junit_cases(junit) if junit.is_file() else []
    fuzz = {}
    for name, label in (("st-open.txt", "without a key"), ("st-api-key.txt", "with an API key")):
        found = sorted(base.rglob(name))
        if found:
            fuzz[label] = schemathesis_summary(found[-1].read_text(errors="replace"))
    fuzz_case = [c for c in cases if c["file"].endswith("test_fuzz.py")]
    kill_jobs: dict[str, dict] = {}
    for f in sorted(kills.glob("*-kills.json")):
        r = json.loads(f.read_text())
        variant = "slow" if r["planned"] >= 20 else "fast"
        kill_jobs.setdefault(r["job"], {})[variant] = {k: r.get(k) for k in ("tried", "survived", "planned",
                                                                              "finished_before_kill", "identical",
                                                                              "final", "reference_seconds")} | {
            "triggers": {t: sum(p.get("trigger") == t and p["killed"] for p in r["points"])
                         for t in ("progress", "start-up", "time")},
            "orphans": sum(len(p["orphans"]) for p in r["points"])}
    kill_cases = {c["name"]: c["outcome"] for c in cases if c["file"].endswith("test_kill.py")}
    for job, v in kill_jobs.items():  # a job whose test failed after its record was written did not survive
        for variant, rec in v.items():
            test = f"test_kill_and_resume{'_20_times' if variant == 'slow' else ''}[{job}]"
            rec["test"] = kill_cases.get(test, "not run")
    disk = {c["name"]: c["outcome"] for c in cases if c["file"].endswith("test_disk_full.py")}
    return run | {
        "files": by_file(cases),
        "fuzz": {"runs": fuzz, "test": fuzz_case[0]["outcome"] if fuzz_case else "not run"},
        "kill": kill_jobs,
        "disk_full": {mode: {k: sum(bool(re.search(rf"[\[-]{mode}[\]-]", n)) and (k == "cases" or o == k)
                                    for n, o in disk.items()) for k in ("cases", "passed", "skipped")}
                      for mode in ("tmpfs", "injected")},
        "failed": [c for c in cases if c["outcome"] in ("failed", "error")],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-slow", action="store_true", help="skip the slow (20 kills per job) run")
    ap.add_argument("--render", action="store_true", help="only render BENCHMARKS.md from the existing result")
    ap.add_argument("--work", type=Path, help="where the test outputs go (default: a temp directory)")
    ap.add_argument("--collect", type=Path, metavar="WORK", help="only re-read the figures of an earlier run's WORK")
    a = ap.parse_args()
    rc = 0
    if a.collect:
        res = collect(a.collect)
        rc = res["pytest_exit_code"]
        path = save_result("reliability", res, RESULTS, command="python benchmarks/reliability.py"
                           + ("" if res["slow"] else " --no-slow"))
        print(f"wrote {path} (from {a.collect})")
    elif not a.render:
        work = a.work or Path(tempfile.mkdtemp(prefix="niche-reliability-"))
        rc, res = run_campaign(not a.no_slow, work)
        path = save_result("reliability", res, RESULTS)
        print(f"wrote {path} (pytest exit {rc}; test outputs in {work})")
    from render import write

    print(f"wrote {write()}")
    sys.exit(rc)


if __name__ == "__main__":
    main()
