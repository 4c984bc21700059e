"""Recommendation data: reading interactions/items/tags, counting bad input, and the two
evaluation splits (leave-last-out by time, cold-start items).

Interactions: ``user_id,item_id[,rating][,timestamp]``. Items: ``item_id`` plus text columns.
Everything is read as strings (ids are opaque); bad rows are counted in :class:`DataReport`,
never a crash. Errors say what was expected, what was found and the fix.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...errors import ConfigError, DataError

RATING_COLS = ("rating", "label_or_rating", "score")
TIME_COLS = ("timestamp", "time", "ts")


@dataclass
class DataReport:
    """What was read and what was dropped, and why (shown by the CLI, stored in niche.json)."""

    interactions_read: int = 0
    unknown_items: int = 0
    """Interactions whose item id is not in the items file (dropped)."""
    items_without_text: int = 0
    """Items whose text columns are all empty (dropped, with their interactions)."""
    interactions_on_textless_items: int = 0
    below_min_rating: int = 0
    duplicates: int = 0
    """Repeated (user, item) pairs; the earliest is kept."""
    single_interaction_users: int = 0
    """Users with one interaction: kept for training statistics, never held out for evaluation."""
    missing_values: int = 0
    """Interactions with an empty user or item id (dropped)."""
    tags_read: int = 0
    tags_unknown_items: int = 0

    def lines(self) -> list[str]:
        """Non-zero counts as human-readable lines."""
        names = {
            "unknown_items": "interactions with an item id not in the items file (dropped)",
            "items_without_text": "items without any text (dropped)",
            "interactions_on_textless_items": "interactions on items without text (dropped)",
            "below_min_rating": "interactions below --min-rating (dropped)",
            "duplicates": "duplicate (user, item) interactions (earliest kept)",
            "single_interaction_users": "users with a single interaction (not evaluated)",
            "missing_values": "interactions with an empty user or item id (dropped)",
            "tags_unknown_items": "tags on unknown items (ignored)",
        }
        return [f"{getattr(self, k)} {v}" for k, v in names.items() if getattr(self, k)]


@dataclass
class Interactions:
    """Interactions in time order, indexed: ``users``/``items`` are int codes into ``user_ids``/``item_ids``."""

    users: np.ndarray  # (M,) int64, codes into user_ids
    items: np.ndarray  # (M,) int64, codes into item_ids (= rows of item_texts)
    times: np.ndarray  # (M,) float64; file order when there is no timestamp column
    user_ids: list[str]
    item_ids: list[str]
    item_texts: list[str]
    report: DataReport = field(default_factory=DataReport)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def subset(self, mask: np.ndarray) -> "Interactions":
        return Interactions(self.users[mask], self.items[mask], self.times[mask], self.user_ids, self.item_ids,
                            self.item_texts, self.report)

    def sequences(self) -> list[np.ndarray]:
        """Per user code, their item codes in time order (the rows are already time-sorted)."""
        order = np.argsort(self.users, kind="stable")
        bounds = np.searchsorted(self.users[order], np.arange(self.n_users + 1))
        return [self.items[order[bounds[u]:bounds[u + 1]]] for u in range(self.n_users)]


def _read_table(path: Path, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found.")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot parse the {what} file as CSV ({e}); expected UTF-8 CSV with a header row.") from None


def _need(df: pd.DataFrame, col: str, path: Path, flag: str) -> None:
    if col not in df.columns:
        raise DataError(f"{path}: column {col!r} not found; columns are: {', '.join(df.columns)} — pass {flag}.")


def item_text(row: dict[str, str], cols: list[str]) -> str:
    """One item text from its columns: ``title | genres: a, b | tags: x; y`` (empty parts left out).
    ``|``-separated genre lists (MovieLens) become comma lists, which tokenize as words."""
    parts = []
    for c in cols:
        v = str(row.get(c, "") or "").strip()
        if not v or v == "(no genres listed)":
            continue
        if "|" in v:
            v = ", ".join(x.strip() for x in v.split("|") if x.strip())
        parts.append(v if not parts else f"{c}: {v}")
    return " | ".join(parts)


def read_items(path: Path, text_cols: list[str] | None = None, tags: Path | None = None,
               id_col: str = "item_id", report: DataReport | None = None) -> tuple[list[str], list[str]]:
    """Item ids and their texts. Default text columns: every column except ids/links.

    ``tags``: an optional ``user_id,item_id,tag`` file; distinct tags per item are appended to its text.
    Items with no text at all are dropped and counted.
    """
    report = report if report is not None else DataReport()
    df = _read_table(path, "items")
    _need(df, id_col, path, "--item-col")
    if text_cols is None:
        text_cols = [c for c in df.columns if c != id_col and not c.endswith("_id")]
    for c in text_cols:
        _need(df, c, path, "--text-cols with the item text columns")
    if not text_cols:
        raise DataError(f"{path}: no text columns; expected item_id plus columns such as title, genres — pass --text-cols.")
    extra: dict[str, list[str]] = {}
    if tags is not None:
        tf = _read_table(tags, "tags")
        for c in ("item_id", "tag"):
            _need(tf, c, tags, "a tags file with columns user_id,item_id,tag")
        known = set(df[id_col])
        for iid, tag in zip(tf["item_id"], tf["tag"]):
            report.tags_read += 1
            if iid not in known:
                report.tags_unknown_items += 1
                continue
            lst = extra.setdefault(iid, [])
            t = tag.strip()
            if t and t.lower() not in (x.lower() for x in lst):
                lst.append(t)
    ids, texts, seen = [], [], set()
    for row in df.to_dict("records"):
        iid = str(row[id_col]).strip()
        if not iid or iid in seen:
            continue
        seen.add(iid)
        text = item_text(row, text_cols)
        if iid in extra:
            text = (text + " | " if text else "") + "tags: " + "; ".join(extra[iid])
        if not text:
            report.items_without_text += 1
            continue
        ids.append(iid)
        texts.append(text)
    if not ids:
        raise DataError(f"{path}: no item has any text in columns {text_cols}; fill them or pass --text-cols.")
    return ids, texts


def read_interactions(path: Path, item_ids: list[str], item_texts: list[str], *, min_rating: float | None = None,
                      report: DataReport | None = None, user_col: str = "user_id", item_col: str = "item_id",
                      rating_col: str | None = None, time_col: str | None = None,
                      textless_items: set[str] | None = None) -> Interactions:
    """Read, clean and time-sort interactions against the known items. Bad rows are counted, not fatal."""
    report = report if report is not None else DataReport()
    df = _read_table(path, "interactions")
    _need(df, user_col, path, "--user-col")
    _need(df, item_col, path, "--item-col")
    rating_col = rating_col or next((c for c in RATING_COLS if c in df.columns), None)
    time_col = time_col or next((c for c in TIME_COLS if c in df.columns), None)
    report.interactions_read = len(df)
    u = df[user_col].str.strip()
    i = df[item_col].str.strip()
    keep = (u != "") & (i != "")
    report.missing_values = int((~keep).sum())
    if min_rating is not None:
        if rating_col is None:
            raise ConfigError(f"--min-rating needs a rating column; {path} has only: {', '.join(df.columns)}.")
        r = pd.to_numeric(df[rating_col], errors="coerce")
        low = keep & ~(r >= min_rating)
        report.below_min_rating = int(low.sum())
        keep &= ~low
    index = {iid: k for k, iid in enumerate(item_ids)}
    known = i.map(index)
    textless = i.isin(textless_items or set())
    report.interactions_on_textless_items = int((keep & textless).sum())
    report.unknown_items = int((keep & known.isna() & ~textless).sum())
    keep &= known.notna()
    if time_col is not None:
        t = pd.to_numeric(df[time_col], errors="coerce")
        if t.isna().any():
            raise DataError(f"{path}: {int(t.isna().sum())} rows have a non-numeric {time_col!r}; expected unix "
                            "seconds (or drop the column to use file order as time).")
        times = t.to_numpy(np.float64)
    else:
        times = np.arange(len(df), dtype=np.float64)
    d = pd.DataFrame({"u": u[keep], "i": known[keep].astype(np.int64), "t": times[keep.to_numpy()],
                      "row": np.flatnonzero(keep.to_numpy())})
    if d.empty:
        raise DataError(f"{path}: no usable interactions ({report.interactions_read} read; "
                        + "; ".join(report.lines()) + "). Check that item ids match the items file.")
    d = d.sort_values(["t", "row"], kind="stable")
    dup = d.duplicated(["u", "i"], keep="first")
    report.duplicates = int(dup.sum())
    d = d[~dup]
    user_ids = sorted(d["u"].unique().tolist())
    ucode = {x: k for k, x in enumerate(user_ids)}
    users = d["u"].map(ucode).to_numpy(np.int64)
    counts = np.bincount(users, minlength=len(user_ids))
    report.single_interaction_users = int((counts == 1).sum())
    return Interactions(users, d["i"].to_numpy(np.int64), d["t"].to_numpy(np.float64), user_ids, list(item_ids),
                        list(item_texts), report)


def load(interactions: Path, items: Path, text_cols: list[str] | None = None, tags: Path | None = None,
         min_rating: float | None = None, **cols: Any) -> Interactions:
    """Read the items (and tags) then the interactions into one cleaned :class:`Interactions`."""
    report = DataReport()
    ids, texts = read_items(items, text_cols, tags, report=report)
    textless: set[str] = set()
    if report.items_without_text:
        all_ids = set(_read_table(items, "items")["item_id"].str.strip())
        textless = all_ids - set(ids)
    return read_interactions(interactions, ids, texts, min_rating=min_rating, report=report,
                             textless_items=textless, **cols)


# -- splits --------------------------------------------------------------------------------
def leave_last_out(data: Interactions) -> tuple[Interactions, np.ndarray, np.ndarray]:
    """Hold out each user's last interaction by time (users with >= 2 interactions).

    Returns:
        (train, test_users, test_items): training interactions and one held-out item per evaluated user.
    """
    last = np.zeros(len(data.users), dtype=bool)
    seen: set[int] = set()
    for k in range(len(data.users) - 1, -1, -1):  # rows are time-sorted: the first seen from the end is the last
        u = int(data.users[k])
        if u not in seen:
            seen.add(u)
            last[k] = True
    counts = np.bincount(data.users, minlength=data.n_users)
    test = last & (counts[data.users] >= 2)
    return data.subset(~test), data.users[test], data.items[test]


def cold_start(data: Interactions, fraction: float = 0.1, seed: int = 0) -> tuple[Interactions, np.ndarray, dict[int, np.ndarray]]:
    """Remove a seeded ``fraction`` of the interacted items from all training interactions.

    Returns:
        (train, cold_items, held): training interactions without any cold item, the cold item codes,
        and per user (that has at least one training interaction) the cold items they interacted with.
    """
    if not 0 < fraction < 1:
        raise ConfigError(f"cold-start fraction must be in (0, 1), got {fraction}.")
    interacted = np.unique(data.items)
    rng = random.Random(seed)
    cold = np.array(sorted(rng.sample(interacted.tolist(), max(1, int(round(fraction * len(interacted)))))), dtype=np.int64)
    is_cold = np.isin(data.items, cold)
    train = data.subset(~is_cold)
    has_train = np.bincount(train.users, minlength=data.n_users) > 0
    held: dict[int, list[int]] = {}
    for u, i in zip(data.users[is_cold], data.items[is_cold]):
        if has_train[u]:
            held.setdefault(int(u), []).append(int(i))
    return train, cold, {u: np.array(v, dtype=np.int64) for u, v in held.items()}
