"""Financial opinion monitoring: classify a feed, store it, alert on bursts of negative texts.

    from niche.apps.monitor import AlertRule, MonitorConfig, run_monitor

Modules: :mod:`.run` (one monitoring run, :class:`MonitorConfig`), :mod:`.alerts` (the alert
rule and its sinks), :mod:`.feed` (feed parsing, entity matching), :mod:`.store` (the SQL
store), :mod:`.report` (the HTML report), :mod:`.demo` (the replayed PhraseBank timeline).
"""

from .alerts import AlertRule, alert_payload, parse_duration, post_webhook
from .demo import WATCH_LIST, build_replay, find_phrasebank, phrasebank_split, run_demo
from .feed import EntityMatcher, parse_entities, parse_ts
from .report import write_report
from .run import MonitorConfig, RunSummary, run_monitor
from .store import Store, open_store

__all__ = ["WATCH_LIST", "AlertRule", "EntityMatcher", "MonitorConfig", "RunSummary", "Store", "alert_payload",
           "build_replay", "find_phrasebank", "open_store", "parse_duration", "parse_entities", "parse_ts",
           "phrasebank_split", "post_webhook", "run_demo", "run_monitor", "write_report"]
