"""Load benchmark: `niche serve` vs a naive FastAPI + HF pipeline server, same model, loopback, wrk.

    python benchmarks/serve_load.py [--model DIR] [--duration 15] [--soak-seconds 600]

Needs Debian's `wrk` (apt-get install wrk). Writes benchmarks/results/serve-load.json; then
`python benchmarks/render.py` puts it in BENCHMARKS.md. Measures, in one run:
- requests/s, p50 and p99 latency at concurrency 1, 8, 32 for short texts (banking77 test) and
  long texts (IMDB test slice, when ../shared is present), server RSS after the runs;
- the p50 overhead of the service at concurrency 1 over a bare in-process ``predict`` of one text;
- failed requests while the model is reloaded under load (concurrency 32);
- a soak at a steady rate: errors and RSS growth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import DATA, RESULTS, ROOT, SHARED, load_result, save_result

LUA = r"""
local bodies = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
end
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_ready(port: int, timeout: float = 180) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server on port {port} did not become ready")


def _ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n * 1000 if unit == "s" else n


def run_wrk(url: str, bodies: Path, script: Path, conc: int, duration: int) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{conc}", f"-d{duration}s", "--latency", "--timeout", "30s", "-s", str(script),
                          url, "--", str(bodies)], capture_output=True, text=True, check=True).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {"concurrency": conc, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": _ms(lat["50"]), "p99_ms": _ms(lat["99"]), "requests": int(total.group(1)),
            "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)}


def soak(port: int, bodies: list[str], seconds: int, rate: float, pid: int) -> dict:
    """A steady open-loop rate with an asyncio client; errors and RSS growth."""
    import httpx

    async def main() -> dict:
        errors = sent = 0
        lat = []
        rss_start = None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            async def one(body: str) -> None:
                nonlocal errors
                t0 = time.perf_counter()
                try:
                    r = await c.post("/v1/models/m/classify", content=body, headers={"Content-Type": "application/json"})
                    errors += r.status_code != 200
                except httpx.HTTPError:
                    errors += 1
                lat.append(time.perf_counter() - t0)

            tasks = []
            start = time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                if rss_start is None and elapsed > min(30, seconds / 10):
                    rss_start = rss_mb(pid)  # after warm-up
                tasks.append(asyncio.ensure_future(one(bodies[sent % len(bodies)])))
                sent += 1
                await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
            await asyncio.gather(*tasks)
        rss_end = rss_mb(pid)
        return {"seconds": seconds, "rate": rate, "requests": sent, "errors": errors,
                "p50_ms": statistics.median(lat) * 1000, "rss_start_mb": rss_start, "rss_end_mb": rss_end,
                "rss_growth_pct": 100 * (rss_end - rss_start) / rss_start}

    return asyncio.run(main())


def inprocess_p50(model: Path, texts: list[str], n: int = 200) -> float:
    from niche import TextClassifier

    clf = TextClassifier.load(model)
    for t in texts[:10]:
        clf.predict_proba(t)
    times = []
    for t in texts[:n]:
        t0 = time.perf_counter()
        clf.predict_proba(t)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=RESULTS / "work" / "banking77-transformer")
    ap.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    ap.add_argument("--soak-seconds", type=int, default=600)
    ap.add_argument("--soak-rate", type=float, default=10.0, help="requests/s during the soak")
    a = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    if not (a.model / "niche.json").is_file():
        sys.exit(f"{a.model}: not a niche model; run `python benchmarks/run.py --only banking77` first or pass --model")
    sys.path.insert(0, str(ROOT / "src"))
    from niche import read_labeled

    short = read_labeled(DATA / "banking77" / "test.csv").texts
    random.Random(0).shuffle(short)
    sets = {"short (banking77)": short[:1000]}
    if (SHARED / "imdb" / "test.csv").exists():
        imdb = read_labeled(SHARED / "imdb" / "test.csv").texts
        sets["long (IMDB)"] = random.Random(0).sample(imdb, 300)
    max_len = json.loads((a.model / "niche.json").read_text())["max_len"]
    tmp = Path(tempfile.mkdtemp(prefix="niche-load-"))
    script = tmp / "post.lua"
    script.write_text(LUA)
    body_files = {}
    for name, texts in sets.items():
        p = tmp / f"{len(body_files)}.jsonl"
        p.write_text("\n".join(json.dumps({"inputs": t}) for t in texts) + "\n")
        body_files[name] = p

    res: dict = {"model": str(a.model), "max_len": max_len, "duration_s": a.duration, "servers": {}}
    res["inprocess_p50_ms"] = inprocess_p50(a.model, short)
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    servers = {
        "niche serve": [sys.executable, "-m", "niche", "serve", f"m={a.model}", "--max-batch", "64", "--max-wait-ms", "5"],
        "FastAPI + pipeline (naive)": [sys.executable, str(ROOT / "benchmarks" / "baseline_server.py"), str(a.model),
                                       "--max-len", str(max_len)],
    }
    for sname, cmd in servers.items():
        port = free_port()
        proc = subprocess.Popen(cmd + ["--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(port)
            url = f"http://127.0.0.1:{port}/v1/models/m/classify"
            runs = []
            for tname, bodies in body_files.items():
                run_wrk(url, bodies, script, 4, 3)  # warm-up
                for conc in (1, 8, 32):
                    r = run_wrk(url, bodies, script, conc, a.duration) | {"texts": tname}
                    print(sname, tname, r, flush=True)
                    runs.append(r)
            res["servers"][sname] = {"runs": runs, "rss_mb_after": rss_mb(proc.pid)}
            if sname == "niche serve":
                out: dict = {}

                def reload_midway() -> None:
                    import httpx

                    time.sleep(a.duration / 3)
                    t0 = time.perf_counter()
                    out["status"] = httpx.post(f"http://127.0.0.1:{port}/v1/models/m/reload", timeout=120).status_code
                    out["seconds"] = time.perf_counter() - t0

                th = threading.Thread(target=reload_midway)
                th.start()
                r = run_wrk(url, body_files["short (banking77)"], script, 32, a.duration)
                th.join()
                res["reload_under_load"] = r | {"reload_status": out.get("status"), "reload_seconds": out.get("seconds")}
                print("reload under load", res["reload_under_load"], flush=True)
                if a.soak_seconds:
                    res["soak"] = soak(port, [json.dumps({"inputs": t}) for t in short], a.soak_seconds, a.soak_rate, proc.pid)
                    res["soak"]["from_run"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
                    print("soak", res["soak"], flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    old = load_result("serve-load")
    if "soak" not in res and old and "soak" in old:  # --soak-seconds 0: keep the last soak, labeled with its run
        res["soak"] = old["soak"] | {"from_run": old["soak"].get("from_run") or old.get("finished", "earlier run")}
    print("wrote", save_result("serve-load", res))


if __name__ == "__main__":
    main()
