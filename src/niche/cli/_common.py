"""What the command modules share: the consoles, the error handler, common options, and the options
generated from the settings dataclasses of :mod:`niche.config`.

Every command is wrapped in :func:`friendly`: a :class:`~niche.errors.NicheError` becomes its message
(which says the fix) and a non-zero exit; anything else is a bug and shows a traceback.

Settings are declared once, as dataclass fields with a docstring in :mod:`niche.config`;
:func:`with_settings` turns each field into a flag (``max_len`` -> ``--max-len``) whose help is the
field's docstring, and hands the command a dict of the flags actually given, so a flag left out
never overrides the dataclass's own default.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.models import OptionInfo

from ..config import field_docs
from ..errors import ConfigError, NicheError

out = Console()
err = Console(stderr=True)

TextCol = Annotated[str, typer.Option("--text-col", help="Text column.")]
LabelCol = Annotated[str, typer.Option("--label-col", help="Label column.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn niche's own errors into a message on stderr and their exit code; Ctrl-C into exit 130."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NicheError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]; rerun with --resume to continue where it stopped.")
            raise typer.Exit(130) from None

    return wrapper


def metrics_side_by_side(named: dict[str, dict[str, Any]], title: str = "") -> Table:
    """One column of metrics (accuracy, macro/weighted P/R/F1, micro F1, examples) per report."""
    table = Table(title=title or None)
    table.add_column("metric")
    for name in named:
        table.add_column(name, justify="right")
    rows = [("accuracy", lambda m: m["accuracy"])] + [
        (f"{a} {k}", (lambda a, k: lambda m: m[a][k])(a, k)) for a in ("macro", "weighted") for k in ("precision", "recall", "f1")
    ] + [("micro f1", lambda m: m["micro"]["f1"]), ("examples", lambda m: m["n"])]
    for label, get in rows:
        table.add_row(label, *[f"{get(m):.4f}" if isinstance(get(m), float) else str(get(m)) for m in named.values()])
    return table


def read_optional(path: Optional[Path], text_col: str, label_col: str, skip_empty: bool = False) -> Any:
    """The labeled file at ``path``, or None when the option was not given."""
    from ..data import read_labeled

    return read_labeled(path, text_col, label_col, skip_empty=skip_empty) if path else None


def read_dev(eval_path: Optional[Path], text_col: str, label_col: str, command: str) -> Any:
    """The labeled dev file every compress command's guard measures on (required)."""
    from ..compress import require_dev

    return require_dev(read_optional(eval_path, text_col, label_col), command)


# --- options generated from settings dataclasses ------------------------------------------------


@dataclass
class Settings:
    """A group of flags generated from settings dataclasses, one flag per field.

    The command function declares a parameter named ``param``; it receives ``{field: value}`` for
    the flags given on the command line (a field given to none of the flags is absent).
    ``classes`` maps a label (a family name, say) to a dataclass; a field shared by several classes
    is one flag, and :meth:`owners` tells which labels it belongs to.
    """

    param: str
    classes: dict[str, type]
    panel: str = ""
    """Help panel of the flags; empty: one panel per set of owners ("transformer & scratch settings")."""
    skip: tuple[str, ...] = ()
    """Fields without a flag (set by another option of the command)."""
    flags: dict[str, str] = field(default_factory=dict)
    """Flag names that are not ``--field-name``."""
    required: tuple[str, ...] = ()
    """Fields that must be given (no default on the command line)."""
    show_defaults: bool = True
    """False where a flag left out means something else than the dataclass default (say so in ``panel``)."""

    def names(self) -> list[str]:
        """Fields with a flag: those every class has first, then in declaration order."""
        seen: dict[str, None] = {}
        for cls in self.classes.values():
            seen.update({f.name: None for f in fields(cls) if f.name not in self.skip})
        return sorted(seen, key=lambda name: len(self.owners(name)) < len(self.classes))

    def owners(self, name: str) -> list[str]:
        return [label for label, cls in self.classes.items() if name in {f.name for f in fields(cls)}]

    def flag(self, name: str) -> str:
        return self.flags.get(name) or "--" + name.replace("_", "-")

    def arg(self, name: str) -> str:
        """The keyword the generated option passes to the command function."""
        return f"{self.param}__{name}"


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return " ".join(map(str, v))
    return "none" if v is None else str(v)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _option(s: Settings, name: str) -> inspect.Parameter:
    """One ``typer.Option`` parameter for field ``name`` of the classes in ``s``."""
    owners = s.owners(name)
    cls = s.classes[owners[0]]
    hint = _hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]  # X | None: None is the default, not a value one can type
    flag, extra, metavar = s.flag(name), "", None
    if typing.get_origin(hint) is Literal:
        extra = " Choices: " + ", ".join(map(str, typing.get_args(hint))) + "."
        hint = str
    elif typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        if len(items) != 2 or Ellipsis in items:
            raise TypeError(f"{cls.__name__}.{name}: only pairs have a flag form, not {hint}")
        metavar, extra = "LO HI", f" Two numbers: {flag} LO HI."
    elif hint is bool:
        flag = f"{flag}/--no-{flag[2:]}"
    elif hint not in (int, float, str):
        raise TypeError(f"{cls.__name__}.{name}: no flag form for {hint}")
    defaults = {label: next(f for f in fields(s.classes[label]) if f.name == name).default for label in owners}
    shown = {label: (flag.split("/")[0 if d else 1] if hint is bool else _show(d)) for label, d in defaults.items()}
    if name in s.required or not s.show_defaults:
        default_text = ""
    elif len(set(shown.values())) == 1:
        default_text = f" [default: {next(iter(shown.values()))}]"
    else:
        default_text = " [default: " + ", ".join(f"{v} ({label})" for label, v in shown.items()) + "]"
    docs: dict[str, list[str]] = {}
    for label in owners:  # a shared field may mean something else in each class (a seed, say)
        docs.setdefault(" ".join(field_docs(s.classes[label]).get(name, "").replace("``", "").split()), []).append(label)
    doc = next(iter(docs)) if len(docs) == 1 else " ".join(f"{', '.join(labels)}: {d}" for d, labels in docs.items())
    panel = s.panel or (" & ".join(owners) + " settings" if len(owners) < len(s.classes) else "settings of every family")
    option = typer.Option(flag, help=escape(doc + extra + default_text), show_default=False, metavar=metavar,
                          rich_help_panel=panel)
    if name in s.required:
        return inspect.Parameter(s.arg(name), inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[hint, option])
    return inspect.Parameter(s.arg(name), inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[hint], option])


def _flags_of(p: inspect.Parameter) -> set[str]:
    """The flags of a typer option parameter (``--x/--no-x`` counts as both)."""
    decls: list[str] = []
    for meta in getattr(p.annotation, "__metadata__", ()):
        if isinstance(meta, OptionInfo):
            decls += ([meta.default] if isinstance(meta.default, str) else []) + list(meta.param_decls or ())
    return {flag for d in decls for flag in d.split("/") if flag.startswith("-")}


def with_settings(*groups: Settings) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Replace each group's parameter of the decorated command by one option per field (see :class:`Settings`)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name not in {g.param for g in groups}]
        generated = [_option(g, name) for g in groups for name in g.names()]
        names = [p.name for p in own + generated] + [g.param for g in groups]
        flags = [flag for p in own + generated for flag in _flags_of(p)]
        clash = {x for x in names + flags if (names + flags).count(x) > 1}
        if clash:  # two settings with one flag: rename one with Settings.flags
            raise TypeError(f"{fn.__name__}: parameter or flag names clash: {sorted(clash)}")

        @wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            for g in groups:
                given = {name: kwargs.pop(g.arg(name)) for name in g.names()}
                kwargs[g.param] = {k: v for k, v in given.items() if v is not None}
            return fn(**kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": sig.return_annotation}
        return wrapper

    return decorate


def refuse_other_families(s: Settings, given: dict[str, Any], family: str) -> None:
    """Refuse the flags in ``given`` that are settings of other families than ``family``."""
    problems = []
    for name in given:
        owners = s.owners(name)
        if family not in owners:
            noun = "family" if len(owners) == 1 else "families"
            who = owners[0] if len(owners) == 1 else ", ".join(owners[:-1]) + " and " + owners[-1]
            problems.append(f"{s.flag(name)} is a setting of the {who} {noun}")
    if problems:
        raise ConfigError("; ".join(problems) + f"; you chose --family {family}.")
