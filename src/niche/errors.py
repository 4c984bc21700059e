"""Domain errors. Every error raised at a boundary says what was expected, what was found,
and how to fix it. The CLI turns them into a message and a non-zero exit; the server (later)
maps each type to one HTTP status in one table."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


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


class DiskFullError(NicheError):
    """A write failed because the disk or the quota is full; what was there before is intact."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it wraps) means "no space left": an ``OSError`` ENOSPC/EDQUOT,
    SQLite's SQLITE_FULL, or a library's own error around one (safetensors raises ``SafetensorError``
    with the OS message, SQLAlchemy wraps the driver's error in ``.orig``)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(e, "sqlite_errorname", None) == "SQLITE_FULL":
            return True
        if any(m in str(e) for m in ("No space left on device", "Disk quota exceeded", "database or disk is full")):
            return True
        stack += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return False


@contextmanager
def no_space_left(path: str | Path, state: str | Callable[[], str],
                  fix: str = "choose another --out on a disk with room") -> Iterator[None]:
    """Turn a "disk full" failure inside the block into a :class:`DiskFullError` that names ``path``,
    says what state the output was left in (``state``, or a function called at the failure) and the
    fix; other errors pass through.

    Example:
        >>> with no_space_left("runs/m", "nothing was written to runs/m"):  # doctest: +SKIP
        ...     write_the_model()
    """
    try:
        yield
    except NicheError:
        raise
    except Exception as e:
        if not is_disk_full(e):
            raise
        if "://" in str(path):  # a database server: its disk, not ours
            where, room, df = "the database server", "", ""
        else:
            here = Path(path)
            while not here.is_dir() and here != here.parent:  # the nearest existing folder: the disk to free
                here = here.parent
            where, room, df = str(here), f" ({shutil.disk_usage(here).free / 1e6:.1f} MB free)", f" (see `df -h {here}`)"
        if callable(state):
            state = state()
        orig = getattr(e, "orig", None)  # SQLAlchemy's: the driver's error, without the SQL and its parameters
        reason = str(orig if isinstance(orig, BaseException) else e).splitlines()[0][:200]
        raise DiskFullError(f"{path}: no space left on the device{room} ({reason}); {state}. Free space on {where}{df}, "
                            f"or {fix}; then rerun the command.") from None
