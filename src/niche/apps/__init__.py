"""Scenario apps built on niche's public API (recommendation, monitoring, assistant)."""
