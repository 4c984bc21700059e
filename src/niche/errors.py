"""Domain errors. Every error raised at a boundary says what was expected, what was found,
and how to fix it. The CLI turns them into a message and a non-zero exit; the server (later)
maps each type to one HTTP status in one table."""

from __future__ import annotations


class NicheError(Exception):
    """Base class for every error niche raises on purpose."""

    exit_code = 2


class DataError(NicheError):
    """The input data is missing, malformed, or does not fit the task."""


class ConfigError(NicheError):
    """A setting or flag has a value niche cannot use."""


class ModelLoadError(NicheError):
    """A model directory is missing, incomplete, or not a niche/Hugging Face model."""


class ResumeError(NicheError):
    """A checkpoint or partial output does not belong to the job being resumed."""
