"""The ``niche`` command line: thin typer adapters over the library.

This module only builds the app and registers the command modules; the commands live in
``train`` (train, evaluate, predict, ensemble, data inspect), ``compress`` (export, quantize,
distill), ``serve``, ``demo``, ``pretrain`` (pretrain, fill-mask, explain) and the groups
``assistant``, ``monitor`` and ``recommend``. What they share (the error handler, the options
generated from :mod:`niche.config`) is in ``_common``.
"""

from __future__ import annotations

import os
import sys

import typer

from . import compress, demo, pretrain, serve, train
from .assistant import assistant_app
from .monitor import monitor_app
from .recommend import recommend_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="niche: specialized text classifiers from pretrained language models, offline, on CPU.")
for _module in (train, compress, serve, demo):
    app.add_typer(_module.commands)
app.add_typer(assistant_app, name="assistant")
app.add_typer(monitor_app, name="monitor")
app.add_typer(recommend_app, name="recommend")
app.add_typer(pretrain.commands)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    app()


if __name__ == "__main__":
    main()
    sys.exit(0)
