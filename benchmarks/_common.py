"""What the benchmark runners and the BENCHMARKS.md sections share: paths, the description of the
machine, the result format and the floor cells.

A result is ``results/NAME.json``: the runner's own numbers plus ``command`` (how to reproduce it),
``date`` / ``finished`` (UTC) and ``machine`` (a dict from :func:`machine`), added by
:func:`save_result`. Results written before this module existed carry ``machine`` as free text
(or, for pretraining, a smaller dict); :func:`describe` prints both.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
DATA = ROOT / "data"  # datasets bundled with the repository
SHARED = ROOT.parent / "shared" / "data"  # the large datasets, read in place, never copied

Floor = tuple[str, str, "bool | None"]  # (floor, measured, met: None = not run)


def machine() -> dict:
    """The machine a result is measured on: CPU, memory, Python, torch and its threads, GPU, load."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    try:
        import torch

        tinfo = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    except ImportError:
        tinfo = {"torch": None, "threads": None, "gpu": None}
    return {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu": cpu or platform.machine(),
            "arch": platform.machine(), "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version(), **tinfo,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def describe(m: dict | str | None) -> str:
    """One line for BENCHMARKS.md: '2 CPU cores (AMD EPYC), 24 GiB RAM, torch 2.5 with 2 threads, Python 3.11'."""
    if not isinstance(m, dict):
        return m or "machine not recorded"  # free text, as results before this module recorded it
    cores = f"{m['cpus']} CPU cores"
    if m.get("cpus_usable") and m["cpus_usable"] != m["cpus"]:
        cores = f"{m['cpus_usable']} of {m['cpus']} CPU cores usable"
    parts = [cores + (f" ({m['cpu']})" if m.get("cpu") else "")]
    if m.get("ram_gib"):
        parts.append(f"{m['ram_gib']:.0f} GiB RAM")
    if m.get("torch"):
        parts.append(f"torch {m['torch']}" + (f" with {m['threads']} threads" if m.get("threads") else ""))
    if m.get("gpu"):
        parts.append(f"GPU {m['gpu']}")
    if m.get("python"):
        parts.append(f"Python {m['python']}")
    return ", ".join(parts)


def stamp(command: str | None = None) -> dict:
    """command (default: this script and its arguments), date, finished (UTC) and machine."""
    command = command or " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    now = time.gmtime()
    return {"command": command, "date": time.strftime("%Y-%m-%d", now),
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", now), "machine": machine()}


def result_path(name: str, results: Path = RESULTS) -> Path:
    return results / f"{name}.json"


def save_result(name: str, res: dict, results: Path = RESULTS, command: str | None = None, stamped: bool = True) -> Path:
    """Write ``results/NAME.json`` atomically; ``stamped`` adds :func:`stamp` (command, date, machine)."""
    path = result_path(name, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = res | stamp(command) if stamped else res
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(out, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_result(name: str, results: Path = RESULTS) -> dict | None:
    """``results/NAME.json``, or None when that benchmark has not been run (or its result was lost)."""
    path = result_path(name, results)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def floor(ok: bool | None) -> str:
    """The status cell of a floors table."""
    return "not run" if ok is None else ("**met**" if ok else "**NOT met**")


class Missing(str):
    """The measured cell of a floor whose results are missing: the renderer keeps that floor's row
    from the existing BENCHMARKS.md, or writes '-' and 'not run'."""


def missing(label: str) -> Floor:
    return (label, Missing("-"), None)


@dataclass
class Keep:
    """A block of BENCHMARKS.md whose results are missing (lost, or not run here): the renderer
    copies it verbatim from the existing BENCHMARKS.md (from the first heading that starts with
    ``heading`` to the next heading of the same or a higher level), or writes ``fallback``."""

    heading: str
    fallback: list[str] = field(default_factory=list)


def section_of(name: str, heading: str, floors: tuple[str, ...] = ()) -> Callable:
    """Make ``fn(R, results) -> (lines, floors)`` the section of result NAME: ``section(results)``.
    When the result is missing, the section is its block kept from the existing BENCHMARKS.md
    (``heading``; the block holds its own floors table) and its ``floors`` rows kept likewise."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def section(results: Path) -> tuple[list, list[Floor]]:
            R = load_result(name, results)
            return ([Keep(heading)], [missing(f) for f in floors]) if R is None else fn(R, results)
        return section
    return wrap
