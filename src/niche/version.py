"""The niche version (its own module, so that any part of niche can read it without importing the package API)."""

__version__ = "0.1.0"
