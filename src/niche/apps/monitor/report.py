"""``niche monitor report``: per-entity PNG + HTML (negative share, volume, alert markers) and an index."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from ...errors import DataError
from .alerts import alert_payload
from .store import Store, mentions, open_store


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "entity"


def _bucket_ms(span_ms: int, points: int = 200) -> int:
    """A round bucket (5 min ... 1 week) giving at most ~``points`` points over the span."""
    for minutes in (5, 15, 30, 60, 120, 360, 720, 1440, 10080):
        if span_ms / (minutes * 60000) <= points:
            return minutes * 60000
    return 10080 * 60000


def write_report(db: str | Path | Store, out_dir: str | Path, bucket_minutes: int | None = None) -> Path:
    """Write ``out_dir/index.html`` and, per entity, ``<entity>.png`` and ``<entity>.html``; returns the index path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    store = db if isinstance(db, Store) else open_store(db)
    out = Path(out_dir)
    try:
        rng = store.time_range()
        if rng is None:
            raise DataError(f"{store.url} has no texts with an entity yet; run `niche monitor run` first.")
        bucket = bucket_minutes * 60000 if bucket_minutes else _bucket_ms(rng[1] - rng[0])
        series: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for entity, t, n, neg in store.series(bucket):
            series[entity].append((t, n, neg))
        alerts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for a in store.all_alerts():
            alerts[a["entity"]].append(a)
        n_docs = store.count(mentions)
    finally:
        if not isinstance(db, Store):
            store.close()
    out.mkdir(parents=True, exist_ok=True)
    width = f"{bucket // 60000} min" if bucket < 3600000 else f"{bucket // 3600000} h"
    rows = []
    for entity in sorted(series):
        pts = series[entity]
        times = [dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc) for t, _, _ in pts]
        share = [neg / n for _, n, neg in pts]
        volume = [n for _, n, _ in pts]
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
        ax1.plot(times, share, lw=1, color="tab:blue", label=f"negative share per {width}")
        total_n, total_neg = sum(volume), sum(neg for _, _, neg in pts)
        ax1.axhline(total_neg / total_n, color="grey", ls="--", lw=0.8, label="overall share")
        for i, a in enumerate(alerts[entity]):
            x = dt.datetime.fromtimestamp(a["window_end_ms"] / 1000, dt.timezone.utc)
            for ax in (ax1, ax2):
                ax.axvline(x, color="red", lw=1.2, alpha=0.8, label="alert" if (i == 0 and ax is ax1) else None)
        ax1.set_ylabel("negative share")
        ax1.set_ylim(0, 1)
        ax1.legend(loc="upper left", fontsize=8)
        ax1.set_title(f"{entity}: {total_n} texts, {len(alerts[entity])} alert(s)")
        ax2.bar(times, volume, width=bucket / 86400000, color="tab:grey", align="edge")
        ax2.set_ylabel(f"texts per {width}")
        ax2.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
        fig.autofmt_xdate()
        fig.tight_layout()
        slug = _slug(entity)
        fig.savefig(out / f"{slug}.png", dpi=90)
        plt.close(fig)
        arows = "".join(
            f"<tr><td>{p['window_start']}</td><td>{p['window_end']}</td><td>{p['negatives']}/{p['n']} "
            f"({p['negative_share']:.0%})</td><td>{p['baseline_negatives']}/{p['baseline_n']} "
            f"({p['baseline_negative_share']:.0%})</td><td>{p['p_value']:.2e} ({p['test']})</td><td>"
            f"{html.escape(str(a.get('webhook') or ''))}</td></tr>"
            for a in alerts[entity] for p in [alert_payload(a)])
        table = (f"<table><tr><th>window start</th><th>window end</th><th>negative in window</th><th>baseline</th>"
                 f"<th>p-value</th><th>webhook</th></tr>{arows}</table>" if arows else "<p>No alerts.</p>")
        (out / f"{slug}.html").write_text(_page(f"{entity}", f"<p><a href='index.html'>all entities</a></p>"
                                                f"<img src='{slug}.png' alt='negative share and volume of {html.escape(entity)}'>"
                                                f"<h2>Alerts</h2>{table}"), encoding="utf-8")
        rows.append(f"<tr><td><a href='{slug}.html'>{html.escape(entity)}</a></td><td>{total_n}</td>"
                    f"<td>{total_neg / total_n:.1%}</td><td>{len(alerts[entity])}</td></tr>")
    span = " to ".join(dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M") for t in rng)
    index = _page("niche monitor", f"<p>{n_docs} entity mentions, {span} UTC; buckets of {width}.</p>"
                  "<table><tr><th>entity</th><th>texts</th><th>negative share</th><th>alerts</th></tr>"
                  + "".join(rows) + "</table>")
    (out / "index.html").write_text(index, encoding="utf-8")
    return out / "index.html"


def _page(title: str, body: str) -> str:
    return ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-width:100%}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>\n")
