"""``niche serve``: a thin adapter over :mod:`niche.serving`; its flags are the fields of
:class:`~niche.config.ServeConfig` (the API key is read from ``--api-key-file``, CORS origins are
given one ``--cors-origin`` each).

The app's lifespan (which loads every model) runs here, around uvicorn, rather than inside uvicorn's
lifespan protocol: a broken directory then fails with niche's own ``ModelLoadError`` message and exit
2, before the port opens, instead of under uvicorn's start-up traceback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..config import ServeConfig
from ._common import Settings, friendly, out, with_settings

commands = typer.Typer()

SERVE_SETTINGS = Settings("settings", {"serve": ServeConfig}, panel="server settings", skip=("api_key", "cors_origins"))


@commands.command()
@friendly
@with_settings(SERVE_SETTINGS)
def serve(
    model_dirs: Annotated[list[str], typer.Argument(help="Model directories, each served under its directory name or as NAME=DIR.")],
    api_key_file: Annotated[Optional[Path], typer.Option("--api-key-file", help="File holding the API key required on /v1/*.")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option("--cors-origin", help="Allow this origin (repeatable); CORS is off by default.")] = None,
    settings: Optional[dict[str, Any]] = None,
) -> None:
    """Serve model directories over HTTP (FastAPI + uvicorn) with micro-batching; SIGHUP reloads."""
    import uvicorn

    from ..errors import ConfigError
    from ..serving.app import create_app

    models: dict[str, str] = {}
    for spec in model_dirs:
        name, _, path = spec.partition("=") if "=" in spec else (Path(spec).name, "", spec)
        if name in models:
            raise ConfigError(f"two models are named {name!r}; use NAME=DIR to tell them apart.")
        if not Path(path).is_dir():
            raise ConfigError(f"{path}: model directory not found.")
        models[name] = path
    key = None
    if api_key_file is not None:
        if not api_key_file.is_file():
            raise ConfigError(f"{api_key_file}: API key file not found.")
        key = api_key_file.read_text().strip()
    cfg = ServeConfig(**(settings or {}), api_key=key, cors_origins=tuple(cors_origin or ()))
    app_ = create_app(models, cfg)
    config = uvicorn.Config(app_, host=cfg.host, port=cfg.port, log_level="info", access_log=False, lifespan="off")
    server = uvicorn.Server(config)

    async def main() -> None:
        async with app_.router.lifespan_context(app_):  # loads the models; raises a NicheError on a broken one
            out.print(f"serving {', '.join(f'{n} ({p})' for n, p in models.items())} on "
                      f"http://{cfg.host}:{cfg.port}  (docs: /docs)")
            await server.serve()

    try:
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:  # uvicorn's loop (uvloop if installed)
            runner.run(main())
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, after a clean shutdown
        pass
    if not server.started:  # e.g. the port is taken (uvicorn has said so)
        raise typer.Exit(3)
