"""The alert rule (a one-sided test on the negative share per entity) and the alert sinks.

For an entity and a window end ``b`` (every ``step`` of event time):

    window    W = [b - window, b)                      n texts about the entity, k of them negative
    baseline  B = [b - window - baseline, b - window)  m texts, j negative

The rule fires when all of these hold:

    k >= min_negatives,  m >= min_baseline,  k/n - j/m >= min_rise,  p < alpha,
    and no alert for the entity ended within the last ``cooldown``,

where ``p`` is the one-sided p-value of "the window's negative share is higher than the baseline's":

- ``binomial`` (default, exact): ``p = P(X >= k)`` for ``X ~ Binomial(n, p0)`` with the baseline share
  ``p0 = (j + 1) / (m + 2)`` (add-one smoothing, so a baseline with no negatives is not taken as
  "negatives are impossible").
- ``ztest`` (two-proportion z-test, pooled): ``z = (k/n - j/m) / sqrt(q (1 - q) (1/n + 1/m))`` with
  ``q = (k + j) / (n + m)``, ``p = 1 - Phi(z)``. Anti-conservative at the small counts of a one-hour
  window (the normal tail is too thin there), hence not the default.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from scipy.stats import binom, norm
from sqlalchemy.engine import Connection

from ...errors import ConfigError
from .store import Store

Test = Literal["binomial", "ztest"]

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | int | float | dt.timedelta) -> dt.timedelta:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"2w"`` (or seconds as a number) -> timedelta."""
    if isinstance(text, dt.timedelta):
        return text
    if isinstance(text, (int, float)):
        return dt.timedelta(seconds=text)
    s = str(text).strip().lower()
    num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(num):] or "s"
    try:
        value = float(num)
    except ValueError:
        value = -1
    if unit not in _UNITS or value <= 0:
        raise ConfigError(f"duration {text!r} not understood; expected a positive number with a unit s, m, h, d or w "
                          "(e.g. 15m, 1h, 7d).")
    return dt.timedelta(seconds=value * _UNITS[unit])


@dataclass
class AlertRule:
    """When a rise in an entity's negative share becomes an alert (see the module docstring)."""

    window: dt.timedelta = dt.timedelta(hours=1)
    """Length of the current window whose negative share is tested."""
    baseline: dt.timedelta = dt.timedelta(days=7)
    """Length of the baseline period just before the window."""
    step: dt.timedelta = dt.timedelta(minutes=15)
    """Windows end at every multiple of ``step`` of event time (UTC epoch); smaller detects sooner, costs more tests."""
    alpha: float = 1e-4
    """Significance level of each one-sided test. Smaller than the textbook 0.001 on purpose: one test runs
    per entity and window end, ~100 per entity per day at a 15-min step (see docs/monitor.md for the
    measurements behind this choice and ``min_negatives``)."""
    test: Test = "binomial"
    """``binomial`` (exact, default) or ``ztest`` (two-proportion z-test)."""
    min_negatives: int = 6
    """Negative texts needed in the window: a handful of negatives is never an alert, however quiet the baseline."""
    min_baseline: int = 20
    """Texts needed in the baseline: without history there is nothing to compare with."""
    min_rise: float = 0.10
    """Smallest rise of the negative share (absolute, 0.10 = 10 points) worth an alert, significant or not."""
    cooldown: dt.timedelta = dt.timedelta(hours=6)
    """After an alert, the same entity does not alert again for this long: one burst, one alert."""

    def validate(self) -> "AlertRule":
        for name in ("window", "baseline", "step", "cooldown"):
            setattr(self, name, parse_duration(getattr(self, name)))
        if self.step.total_seconds() <= 0 or self.window < self.step:
            raise ConfigError(f"step ({self.step}) must be positive and at most the window ({self.window}).")
        if self.step.total_seconds() % 1 or self.window % self.step or self.baseline % self.step:
            raise ConfigError(f"window ({self.window}) and baseline ({self.baseline}) must be whole multiples of the "
                              f"step ({self.step}), a whole number of seconds: windows are summed from step buckets.")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}.")
        if self.test not in ("binomial", "ztest"):
            raise ConfigError(f"test must be 'binomial' or 'ztest', got {self.test!r}.")
        if self.min_negatives < 1 or self.min_baseline < 1:
            raise ConfigError("min_negatives and min_baseline must be at least 1.")
        return self

    def ms(self, name: str) -> int:
        return int(getattr(self, name).total_seconds() * 1000)

    def p_value(self, k: int, n: int, j: int, m: int) -> float:
        """One-sided p-value that the window share k/n exceeds the baseline share j/m."""
        if self.test == "binomial":
            p0 = (j + 1) / (m + 2)
            return float(binom.sf(k - 1, n, p0))
        q = (k + j) / (n + m)
        se = math.sqrt(q * (1 - q) * (1 / n + 1 / m))
        return 1.0 if se == 0 else float(norm.sf((k / n - j / m) / se))


def evaluate(store: Store, conn: Connection, rule: AlertRule, last_b: int, new_b: int) -> tuple[list[dict[str, Any]], int]:
    """Test every (entity, window end) with last_b < end <= new_b; insert and return the alerts that fire.

    Only (entity, end) pairs whose window holds at least ``min_negatives`` negatives can fire, so they
    are found first from the step buckets with a negative (one small range query); the baseline is
    read only for those. Returns (new alert rows, significant rises suppressed by the cooldown).
    """
    step, window, baseline, cooldown = rule.ms("step"), rule.ms("window"), rule.ms("baseline"), rule.ms("cooldown")
    negs: dict[str, dict[int, int]] = defaultdict(dict)
    for entity, b, _n, k in store.buckets_between(conn, last_b + step - window, new_b):
        negs[entity][b] = k
    candidates: list[tuple[int, str]] = []
    for entity, per_bucket in negs.items():
        if sum(per_bucket.values()) < rule.min_negatives:
            continue
        for b in range(last_b + step, new_b + 1, step):
            if sum(per_bucket.get(x, 0) for x in range(b - window, b, step)) >= rule.min_negatives:
                candidates.append((b, entity))
    fired: list[dict[str, Any]] = []
    suppressed = 0
    last_alert: dict[str, int | None] = {}
    for b, entity in sorted(candidates):
        n, k = store.counts(conn, entity, b - window, b)
        m, j = store.counts(conn, entity, b - window - baseline, b - window)
        if m < rule.min_baseline or k / n - j / m < rule.min_rise:
            continue
        p = rule.p_value(k, n, j, m)
        if p >= rule.alpha:
            continue
        if entity not in last_alert:
            last_alert[entity] = store.last_alert_end(conn, entity)
        prev = last_alert[entity]
        if prev is not None and b - prev < cooldown:
            suppressed += 1
            continue
        row = {"entity": entity, "window_start_ms": b - window, "window_end_ms": b, "n": n, "negatives": k,
               "baseline_n": m, "baseline_negatives": j, "p_value": p, "test": rule.test,
               "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        row["id"] = store.insert_alert(conn, row)
        if row["id"] is not None:
            fired.append(row)
            last_alert[entity] = b
    return fired, suppressed


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def alert_payload(row: dict[str, Any], rule: AlertRule | None = None) -> dict[str, Any]:
    """The JSON form of an alert (JSONL file, webhook body)."""
    n, m = row["n"], row["baseline_n"]
    out = {"id": row["id"], "entity": row["entity"], "window_start": iso(row["window_start_ms"]),
           "window_end": iso(row["window_end_ms"]), "n": n, "negatives": row["negatives"],
           "negative_share": round(row["negatives"] / n, 4) if n else None, "baseline_n": m,
           "baseline_negatives": row["baseline_negatives"],
           "baseline_negative_share": round(row["baseline_negatives"] / m, 4) if m else None,
           "p_value": row["p_value"], "test": row["test"], "created": row["created"]}
    if rule is not None:
        out["alpha"] = rule.alpha
    return out


def post_webhook(url: str, payload: dict[str, Any], timeout: float = 5.0, retries: int = 3,
                 backoff: float = 0.5) -> tuple[bool, str, int]:
    """POST ``payload`` as JSON; retry timeouts, connection errors, 408/429 and 5xx with exponential backoff.

    Never raises for a network problem. Returns (delivered, what happened, attempts made).
    """
    body = json.dumps(payload).encode("utf-8")
    last = ""
    for attempt in range(retries + 1):
        try:
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "niche-monitor"})
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return True, f"sent (HTTP {r.status})", attempt + 1
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
            if 400 <= e.code < 500 and e.code not in (408, 429):
                return False, f"failed: {last} (not retried: the request itself was refused)", attempt + 1
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            last = str(getattr(e, "reason", e)) or type(e).__name__
        except ValueError as e:  # malformed URL
            return False, f"failed: {e}", attempt + 1
        if attempt < retries:
            time.sleep(backoff * 2 ** attempt)
    return False, f"failed after {retries + 1} attempts: {last}", retries + 1
