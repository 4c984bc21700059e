"""Write BENCHMARKS.md from the JSON results in benchmarks/results/.

    python benchmarks/render.py                 # rewrites BENCHMARKS.md
    python benchmarks/render.py --out /tmp/B.md # writes elsewhere (still reading the existing BENCHMARKS.md)

(``python benchmarks/run.py --render`` and ``python benchmarks/compress.py --render`` do the same.)

The document is the ordered list SECTIONS: one function per section (benchmarks/sections/), each
``section(results) -> (lines, floors)``, with the heading of its floors table. The floors of the
core benchmarks (classification, serving, compression) come together after those sections; every
other benchmark's floors follow its section.

Results that are missing are not dropped: some of the core results were lost after their numbers
were written, and a benchmark may simply not have been rerun on this machine. A section returns a
``Keep`` block for what it cannot render, and a ``missing`` floor for a floor it cannot measure;
both are copied verbatim from the existing BENCHMARKS.md (see ``_common.Keep``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCHMARKS_MD, RESULTS, Floor, Keep, Missing, floor  # noqa: E402
from sections import (assistant, auto_budget, classification, compression, distributed, monitor, onnx_runtime,  # noqa: E402
                      peers, pretraining, recommend, reliability, serving, train_step, versions)

Section = Callable[[Path], tuple[list, list[Floor]]]

# (section, heading of its floors table, where the table goes: "core" = with the other core floors
# after the core sections, "after" = right after its section)
SECTIONS: list[tuple[Section, str | None, str]] = [
    (classification.section, "## Floors: core classification", "core"),
    (serving.section, "## Floors: serving", "core"),
    (compression.section, "## Floors: compression", "core"),
    (assistant.section, "### Floors: assistant", "after"),
    (monitor.section, "### Floors: monitor", "after"),
    (recommend.section, "### Floors: recommendation", "after"),
    (distributed.ddp_section, "### Floors: distributed training", "after"),
    (distributed.ray_section, "### Floors: Ray scoring", "after"),
    (pretraining.section, "### Floors: pretraining", "after"),
    (train_step.section, None, "after"),
    (auto_budget.section, None, "after"),
    (onnx_runtime.section, None, "after"),
    (versions.section, None, "after"),
    (reliability.section, "### Floors: reliability", "after"),
    (peers.section, "### Floors: peers", "after"),
    (classification.notes, None, "after"),
]


def _level(line: str) -> int:
    m = re.match(r"(#+) ", line)
    return len(m.group(1)) if m else 0


def _heading(line: str) -> str:
    """A heading as it is matched: without the issue number older headings carried."""
    return re.sub(r" \(issue #[^)]*\)$", "", line)


class Existing:
    """The BENCHMARKS.md being replaced: its blocks by heading and its floor rows by floor."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.rows: dict[str, str] = {}
        in_floors = False
        for ln in self.lines:
            if _level(ln):
                in_floors = "Floors" in ln
            elif in_floors and ln.startswith("| ") and not ln.startswith("| floor |"):
                self.rows.setdefault(ln[2:].split(" | ", 1)[0], ln)

    def block(self, heading: str) -> list[str] | None:
        """From the first heading starting with ``heading`` to the next heading of the same or a
        higher level (the title's block, level 1, ends at the first section) or an HTML comment."""
        for i, ln in enumerate(self.lines):
            if _level(ln) and _heading(ln).startswith(heading):
                stop = max(_level(ln), 2)
                j = next((j for j in range(i + 1, len(self.lines))
                          if 0 < _level(self.lines[j]) <= stop or self.lines[j].startswith("<!--")), len(self.lines))
                return self.lines[i:j]
        return None


def expand(lines: list, old: Existing) -> list[str]:
    out: list[str] = []
    for x in lines:
        if isinstance(x, Keep):
            kept = old.block(x.heading)
            out += x.fallback if kept is None else kept
        else:
            out.append(x)
    return out


def floors_table(heading: str, floors: list[Floor], old: Existing) -> list[str]:
    """The floors table; a floor without results keeps its row of the existing file. No table when
    no floor has a row to show."""
    rows = []
    for label, measured, ok in floors:
        if isinstance(measured, Missing) and label in old.rows:
            rows.append(old.rows[label])
        else:
            rows.append(None if isinstance(measured, Missing) else f"| {label} | {measured} | {floor(ok)} |")
    if not any(rows):
        return []
    rows = [r or f"| {label} | - | not run |" for r, (label, _, _) in zip(rows, floors)]
    return [heading, "", "| floor | measured | status |", "|---|---|---|", *rows, ""]


def render(results: Path = RESULTS, existing: str = "") -> str:
    old = Existing(existing)
    body: list[str] = []
    core_floors: list[str] = []
    for section, heading, place in SECTIONS:
        if place == "after" and core_floors:  # the first section after the core ones
            body, core_floors = body + core_floors, []
        lines, floors = section(results)
        body += expand(lines, old)
        if heading:
            table = floors_table(heading, floors, old)
            if place == "core":
                core_floors += table
            else:
                body += table
    return "\n".join(body + core_floors)


def write(results: Path = RESULTS, target: Path = BENCHMARKS_MD, existing: Path | None = None) -> Path:
    """Render ``results`` into ``target``, keeping what has no results from ``existing`` (default: target)."""
    existing = existing or target
    text = render(results, existing.read_text(encoding="utf-8") if existing.is_file() else "")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS, help="the JSON results (default: benchmarks/results)")
    ap.add_argument("--out", type=Path, default=BENCHMARKS_MD, help="where to write (default: BENCHMARKS.md)")
    ap.add_argument("--existing", type=Path, default=BENCHMARKS_MD,
                    help="the file whose blocks are kept where results are missing (default: BENCHMARKS.md)")
    a = ap.parse_args()
    print(f"wrote {write(a.results, a.out, a.existing)}")


if __name__ == "__main__":
    main()
