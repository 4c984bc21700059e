"""Model directories: the ``niche.json`` metadata, atomic writes, and the model card.

A niche model directory is a Hugging Face style directory (weights as safetensors, tokenizer and
``config.json`` where the family has them) plus ``niche.json`` (:class:`ModelInfo`) and a
``README.md`` model card. Directories are built in a temporary sibling and renamed into place
(:func:`write_dir_atomically`), so a crash leaves the previous version or the new one, never half of
one. Every writer of ``niche.json`` goes through :func:`write_info`.

Loading trusts nothing in a directory (:func:`read_info`, :func:`check_safetensors`): weights are
read from safetensors only, never from pickles (``*.bin``, ``*.pkl``, ``*.pt`` are not opened), and a
symbolic link inside the directory whose target lies outside it (``model.safetensors ->
/etc/passwd``) is refused rather than followed. The directory itself may be a link (``models/live ->
models/v3``); links between its own files are fine.

Example:
    >>> info = ModelInfo(family="sparse", labels=["neg", "pos"], config={}, training={"rows": 4})
    >>> info.to_dict()["format_version"]
    1
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import glob
import json
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .version import __version__
from .errors import ModelLoadError, no_space_left

META = "niche.json"
CARD = "README.md"
FORMAT_VERSION = 1
"""Version of the ``niche.json`` layout; a directory written by a newer niche is refused with a hint."""


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's numbers, recorded in every ``niche.json``."""
    import numpy as np
    import sklearn

    out = {"niche": __version__, "python": platform.python_version()}
    try:  # the sparse family runs without torch/transformers installed
        import torch
        import transformers

        out |= {"torch": torch.__version__, "transformers": transformers.__version__}
    except ImportError:
        pass
    return out | {"scikit-learn": sklearn.__version__, "numpy": np.__version__}


def write_dir_atomically(out: str | Path, fill: Callable[[Path], None]) -> None:
    """Build a directory in a temp sibling with ``fill(tmp)``, then rename it into place.

    A crash at any point leaves either the previous ``out`` or the new one, never a half-written one;
    a temp sibling left by a killed writer is removed by the next write. A full disk raises
    :class:`~niche.errors.DiskFullError` (previous ``out`` intact, no temp directory left).
    """
    out = Path(out)
    with no_space_left(out, f"nothing was written to {out}" + (" and its previous version is intact"
                                                                 if out.exists() else "")):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(out)
        try:
            fill(tmp)
            move_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def temp_sibling(out: Path) -> Path:
    """A new empty temp directory beside ``out`` (``.NAME.tmp-HOST-PID-XXXX``), after removing the temp
    and old siblings of ``out`` that processes of this host which are no longer running left behind
    (killed mid-write). The host and pid in the name keep a live writer's directory, and another host's
    on a shared disk, out of that clean-up."""
    for p in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        m = re.fullmatch(rf"\.{re.escape(out.name)}\.(?:tmp|old)-(.+)-(\d+)-[^-]+", p.name)
        if m and m[1] == _HOST and not process_alive(int(m[2])):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{_HOST}-{os.getpid()}-", dir=out.parent))


_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (this process counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``);
    False where the system or the file system cannot."""
    if sys.platform != "linux":
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl without it
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename a finished directory ``tmp`` to ``out`` (a sibling), replacing any previous ``out``.

    On Linux the two are swapped atomically, so a reader (or a crash) sees the previous ``out`` or the new
    one, never no ``out`` at all; elsewhere the previous one is moved aside first (a crash between the two
    renames leaves it as ``.NAME.old-*``)."""
    if out.is_dir() and not out.is_symlink() and _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous version
    elif out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old-{_HOST}-{os.getpid()}-{time.time_ns()}"
        os.replace(out, old)
        os.replace(tmp, out)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(tmp, out)


@dataclass
class ModelInfo:
    """What ``niche.json`` says about a classifier directory.

    Family-specific facts (``runtime``, ``precision``, ``onnx``, ``members``, ``compression``, ...)
    live in ``extra`` and are written as top-level keys beside the common ones.
    """

    family: str
    """Registry name of the model family (:mod:`niche.families`)."""
    labels: list[str]
    """Labels in model order (the columns of ``predict_proba``)."""
    config: dict[str, Any]
    """The family config the model was trained with (``dataclasses.asdict``)."""
    training: dict[str, Any]
    """Data source, sha256, rows, dev split, seconds, and what the family reports about training."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Metrics per split, at least ``dev``."""
    base: str | None = None
    max_len: int | None = None
    truncation: str | None = None
    versions: dict[str, str] = field(default_factory=library_versions)
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        order = ["format_version", "family", "base", "max_len", "truncation", "labels", "config", "training",
                 "metrics", "versions"]
        return {k: d[k] for k in order} | dict(self.extra)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = META) -> "ModelInfo":
        """Validate a parsed ``niche.json``; raises :class:`ModelLoadError` saying what is wrong."""
        if not isinstance(d, Mapping):
            raise ModelLoadError(f"{where}: expected a JSON object, found {type(d).__name__}. Retrain or restore it.")
        version = d.get("format_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ModelLoadError(f"{where}: format_version must be a positive integer, found {version!r:.60}; "
                                 "the file is damaged. Retrain or restore it.")
        if version > FORMAT_VERSION:
            raise ModelLoadError(f"{where}: format_version {version!r} is newer than this niche understands "
                                 f"({FORMAT_VERSION}); upgrade niche (pip install -U niche) to load it.")
        for key, typ in (("family", str), ("labels", list), ("config", dict), ("training", dict),
                         ("metrics", dict), ("versions", dict)):
            if (key in ("family", "labels") or key in d) and not isinstance(d.get(key), typ):
                name = {"dict": "JSON object", "list": "list", "str": "string"}[typ.__name__]
                raise ModelLoadError(f"{where}: '{key}' is missing or not a {name} "
                                     f"(found {d.get(key)!r:.60}); the file is damaged. Retrain or restore it.")
        labels = d["labels"]
        if not labels or not all(isinstance(v, str) for v in labels) or len(set(labels)) != len(labels):
            raise ModelLoadError(f"{where}: 'labels' must be a non-empty list of distinct strings (found "
                                 f"{labels!r:.60}); the file is damaged. Retrain or restore it.")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw = {k: d[k] for k in known if k in d}
        kw.setdefault("config", {})
        kw.setdefault("training", {})
        return cls(**kw, extra={k: v for k, v in d.items() if k not in known})


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON (non-ASCII kept readable)."""
    Path(path).write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")


def write_info(d: str | Path, info: ModelInfo | Mapping[str, Any]) -> None:
    """Write ``niche.json`` into the (temporary) directory ``d``; a dict is validated as a
    :class:`ModelInfo` first unless it describes another kind of directory (``kind`` key)."""
    if isinstance(info, ModelInfo):
        payload: Mapping[str, Any] = info.to_dict()
    elif "kind" in info:  # e.g. a recommender: its own schema, same file name
        payload = info
    else:
        payload = ModelInfo.from_dict(info).to_dict()
    write_json(Path(d) / META, payload)


def read_info(path: str | Path) -> dict[str, Any]:
    """The parsed ``niche.json`` of the directory ``path``, with an error that says the fix."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model directory not found. Train one with `niche train --out {path}`.")
    meta = path / META
    if not meta.is_file():
        hint = (" It looks like a plain Hugging Face model; fine-tune it with `niche train --base "
                f"{path}`." if (path / "config.json").exists() else "")
        raise ModelLoadError(f"{path}: no {META}; this is not a niche model directory.{hint}")
    check_links(path)
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{meta}: corrupt JSON ({e}). Retrain or restore the directory.") from None


def check_links(path: str | Path) -> None:
    """Refuse a model directory holding a symbolic link whose target is outside the directory.

    A model directory is a unit that is copied, served and reloaded as one; a link out of it (to
    ``/etc/passwd``, to another model's weights, to a file that may change under a running server) is
    either an attack or an accident, and niche does not follow it. Links to the directory itself
    and between its own files are allowed. Linked folders are checked, not entered.
    """
    root = Path(path).resolve()
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink() and not p.resolve().is_relative_to(root):
                raise ModelLoadError(
                    f"{path}: {p.relative_to(root)} is a symbolic link to {os.readlink(p)}, outside the model "
                    "directory; niche does not follow links out of a model directory. Copy the file into the "
                    f"directory instead (cp --remove-destination \"$(readlink -f {p})\" {p}) if you trust it."
                )


def check_safetensors(path: Path, fix: str = "Retrain the model or restore the directory from a backup.") -> list[str]:
    """The tensor names of the safetensors file ``path``, or a :class:`ModelLoadError` if it is
    missing, truncated or not safetensors (checked from its header, without reading the tensors)."""
    from safetensors import safe_open

    if not path.is_file():
        raise ModelLoadError(f"{path.parent}: missing {path.name}; the model directory is incomplete. {fix}")
    try:
        with safe_open(str(path), framework="np") as f:
            return list(f.keys())
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError) for damaged files
        raise ModelLoadError(f"{path}: not a complete safetensors file ({e}); it is truncated or damaged "
                             f"({path.stat().st_size} bytes). {fix}") from None


@contextlib.contextmanager
def damaged_files(d: Path, what: str, fix: str) -> Iterator[None]:
    """Turn any error while reading a family's own files (``what``, e.g. "a.json and b.safetensors")
    into a :class:`ModelLoadError` that names them and ends in ``fix``; a ModelLoadError passes as is."""
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as e:  # json, safetensors, tokenizers, shapes: damaged or mismatched files
        found = "corrupt JSON" if isinstance(e, json.JSONDecodeError) else f"{type(e).__name__}: {str(e)[:200]}"
        raise ModelLoadError(f"{d}: {what} are damaged or do not belong together ({found}). {fix}") from None


def read_family_files(d: Path, meta: str, weights: str, fix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the JSON ``d/meta``, the arrays of the safetensors ``d/weights``) of a family's model directory,
    or a :class:`ModelLoadError` naming the missing, truncated or damaged file and ending in ``fix``."""
    from safetensors.numpy import load_file

    if not (d / meta).is_file():
        raise ModelLoadError(f"{d}: missing {meta}. {fix}")
    check_safetensors(d / weights, fix)
    with damaged_files(d, f"{meta} and {weights}", fix):
        info = json.loads((d / meta).read_text(encoding="utf-8"))
        arrays = load_file(str(d / weights))
    return info, arrays


def metrics_lines(info: Mapping[str, Any]) -> list[str]:
    from .evaluation import metrics_table

    lines: list[str] = []
    for split, m in info.get("metrics", {}).items():
        lines += [f"## Evaluation ({split})", "", metrics_table(m)]
    return lines


def model_card(name: str, info: Mapping[str, Any], facts: list[str], usage: list[str] = ()) -> str:
    """The ``README.md`` of a classifier directory.

    Args:
        facts: family-specific bullet lines (what the base is), from the family's ``card_facts``.
        usage: extra lines after the niche usage snippet (e.g. how to load with plain transformers).
    """
    tr = info["training"]
    lines = [
        f"# {name}", "",
        f"A **{info['family']}** text classifier trained with [niche](https://example.invalid/niche) "
        f"on `{Path(tr['data']).name}` ({tr['rows']} rows; dev: {tr['dev']}, {tr['dev_rows']} rows).", "",
        *facts,
        f"- labels ({len(info['labels'])}): " + ", ".join(f"`{lab}`" for lab in info["labels"][:30])
        + (" ..." if len(info["labels"]) > 30 else ""),
    ]
    if info.get("max_len"):
        lines.append(f"- max_len {info['max_len']}, long-text policy `{info['truncation']}`")
    lines += [f"- training data sha256 `{tr['data_sha256']}`; trained in {tr['seconds']} s", "", *metrics_lines(info)]
    lines += ["## Use", "", "```python", "from niche import TextClassifier",
              f'clf = TextClassifier.load("{name}")', 'clf.predict(["some text"])', "```", *usage]
    return "\n".join(lines) + "\n"
