"""Settings declared once: every field of the settings dataclasses has a flag with help text, flags
left out are not passed, a flag of another family is refused; and the layout of niche.cli."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from niche import config
from niche.cli import app
from niche.errors import ConfigError

from .test_cli import niche

CLI_DIR = Path(config.__file__).parent / "cli"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


GUARD = {f.name: flag(f.name) for f in dataclasses.fields(config.GuardConfig) if f.name != "require_faster"} | {
    "batch_size": "--guard-batch-size"}  # --batch-size of distill is the student's
STUDENT = {f.name: flag(f.name) for f in dataclasses.fields(config.TransformerConfig) if f.name != "base"} | {
    "threads": "--student-threads"}  # --threads of distill is the guard's; --student sets the base
EXPECTED = {  # command -> [(dataclass, {field: flag})]; a field left out here must not exist
    "train": [(cls, {f.name: flag(f.name) for f in dataclasses.fields(cls)})
              for cls in (config.TransformerConfig, config.ScratchConfig, config.SparseConfig)],
    "pretrain": [(config.PretrainConfig, {f.name: flag(f.name) for f in dataclasses.fields(config.PretrainConfig)})],
    "distill": [(config.DistillConfig, {f.name: flag(f.name) for f in dataclasses.fields(config.DistillConfig)}),
                (config.TransformerConfig, STUDENT), (config.GuardConfig, GUARD)],
    "export": [(config.GuardConfig, GUARD)],
    "quantize": [(config.GuardConfig, GUARD)],
    "ensemble": [(config.EnsembleConfig, {"steps": "--steps"})],
    "serve": [(config.ServeConfig, {f.name: flag(f.name) for f in dataclasses.fields(config.ServeConfig)
                                    if f.name not in ("api_key", "cors_origins")})],  # --api-key-file, --cors-origin
}
NOT_ON_THE_COMMAND_LINE = {("GuardConfig", "require_faster"): "the CLI always requires a faster result",
                           ("TransformerConfig", "base"): "distill: --student is the student's base",
                           ("ServeConfig", "api_key"): "--api-key-file", ("ServeConfig", "cors_origins"): "--cors-origin"}


def flat_help(command: str) -> str:
    r = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert r.exit_code == 0, r.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.output).split())


def test_every_settings_field_has_a_docstring() -> None:
    classes = [c for c in vars(config).values() if isinstance(c, type) and dataclasses.is_dataclass(c)
               and c.__module__ == config.__name__]
    assert len(classes) >= 7
    for cls in classes:
        docs = config.field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name, "").strip()]
        assert not missing, f"{cls.__name__}: fields without a docstring: {missing}"


def test_field_docs_inherit_and_override() -> None:
    scratch, base = config.field_docs(config.ScratchConfig), config.field_docs(config.TransformerConfig)
    assert scratch["lr"] == base["lr"] == "Peak AdamW learning rate."  # inherited: ScratchConfig only changes the default
    assert "Transformer hidden size" in scratch["hidden"] and "hidden" not in base
    assert "\n" in base["truncation"] and not base["truncation"].startswith(" ")  # cleaned like a docstring


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_every_settings_field_has_a_flag_with_help(command: str) -> None:
    text = flat_help(command)
    click_cmd = get_command(app).commands[command]  # type: ignore[attr-defined]
    options = {opt: p for p in click_cmd.params for opt in p.opts + p.secondary_opts}
    for cls, flags in EXPECTED[command]:
        for f in dataclasses.fields(cls):
            if f.name not in flags:
                assert (cls.__name__, f.name) in NOT_ON_THE_COMMAND_LINE, f"{command}: {cls.__name__}.{f.name} has no flag"
                continue
            name = flags[f.name]
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"{command} --help lacks {name}"
            assert name in options and (options[name].help or "").strip(), f"{command} {name}: no help text"
            doc = " ".join(config.field_docs(cls)[f.name].replace("``", "").split())
            assert doc[:40] in text, f"{command} {name}: the help is not the docstring of {cls.__name__}.{f.name}"
            if f.type == "bool" or f.type is bool:
                assert f"--no-{name[2:]}" in options, f"{command} {name}: a boolean needs its --no- form"


def test_existing_flag_names_still_exist() -> None:
    """The flags of niche train / pretrain / distill before they were generated."""
    before = {
        "train": "data out eval text-col label-col family arch vectors layers hidden vocab-size base max-len truncation "
                 "epochs batch-size lr head-lr-mult warmup-ratio patience eval-every class-weights checkpoint-every "
                 "checkpoint-dir resume seed dev-fraction skip-empty device threads grad-accum precision test quiet",
        "pretrain": "corpus out text-col exclude base extend-vocab tokenizer vocab-size layers hidden heads intermediate "
                    "max-len masking mlm-prob epochs max-steps max-minutes batch-size lr precision checkpoint-every "
                    "eval-every checkpoint-dir resume seed device threads quiet",
        "distill": "teacher data student out eval unlabeled text-col label-col alpha temperature epochs lr max-len "
                   "batch-size seed precision resume max-drop threads quiet",
        "export": "out eval format int8 text-col label-col max-drop threads fuse no-fuse",
        "serve": "host port api-key-file max-batch max-wait-ms max-queue max-texts max-chars cors-origin log-texts",
    }
    for command, names in before.items():
        params = get_command(app).commands[command].params  # type: ignore[attr-defined]
        opts = {o for p in params for o in p.opts + p.secondary_opts}
        assert not {"--" + n for n in names.split()} - opts, command
    train = {p.name: p for p in get_command(app).commands["train"].params}  # type: ignore[attr-defined]
    assert any("-q" in p.opts for p in train.values())


@pytest.mark.parametrize("family, args, message", [
    ("transformer", ["--min-df", "3"], "--min-df is a setting of the sparse family; you chose --family transformer."),
    ("sparse", ["--epochs", "2", "--no-nb"], "--epochs is a setting of the transformer, scratch and static families; you chose --family sparse."),
    ("transformer", ["--arch", "bilstm", "--word-ngrams", "1", "2"],
     "--arch is a setting of the scratch family; --word-ngrams is a setting of the sparse family; you chose --family transformer."),
])
def test_flag_of_another_family_is_refused(tmp_path: Path, family: str, args: list[str], message: str) -> None:
    code, out = niche("train", "--data", tmp_path / "never-read.csv", "--out", tmp_path / "m", "--family", family, *args)
    assert code == 2, out
    assert message in " ".join(out.split()) and "Traceback" not in out
    assert not (tmp_path / "m").exists()


class Stop(ConfigError):
    pass


@pytest.mark.parametrize("family, args, params", [
    ("scratch", ["--layers", "1", "--class-weights"], {"layers": 1, "class_weights": True}),  # lr stays ScratchConfig's 1e-3
    ("sparse", ["--word-ngrams", "1", "2", "--no-nb", "--C", "3", "--seed", "7"], {"word_ngrams": (1, 2), "nb": False, "C": 3.0, "seed": 7}),
    ("transformer", [], {}),
])
def test_train_passes_only_the_flags_given(monkeypatch, toy_csv, tmp_path: Path, family: str, args: list[str],
                                           params: dict) -> None:
    from niche import classifier

    seen = {}

    def fake(fam: str, **kw):
        seen.update(family=fam, params=kw)
        raise Stop("stopped by the test")

    monkeypatch.setattr(classifier, "TextClassifier", fake)
    train, _ = toy_csv
    code, out = niche("train", "--data", train, "--out", tmp_path / "m", "--family", family, *args)
    assert code == 2 and "stopped by the test" in out, out
    assert seen == {"family": family, "params": params}


def test_pretrain_and_distill_build_their_configs_from_the_flags(monkeypatch, toy_csv, tmp_path: Path) -> None:
    from niche import compress, pretrain

    seen = {}

    def fake_pretrain(corpus, out, cfg, **kw):
        seen["pretrain"] = cfg
        raise Stop("stopped by the test")

    def fake_distill(teacher, train, dev, out, cfg, unlabeled=None, params=None, guard=None, **kw):
        seen["distill"] = (cfg, params, guard)
        raise Stop("stopped by the test")

    monkeypatch.setattr(pretrain, "pretrain", fake_pretrain)
    monkeypatch.setattr(compress, "distill", fake_distill)
    train, dev = toy_csv
    code, out = niche("pretrain", "--corpus", train, "--out", tmp_path / "mlm", "--min-frequency", "3", "--no-lowercase",
                      "--max-grad-norm", "0.5", "--layers", "2")
    assert code == 2 and "stopped by the test" in out, out
    cfg = seen["pretrain"]
    assert (cfg.min_frequency, cfg.lowercase, cfg.max_grad_norm, cfg.layers) == (3, False, 0.5, 2)
    assert cfg.lr == config.PretrainConfig.lr and cfg.hidden == config.PretrainConfig.hidden  # left out: the defaults

    code, out = niche("distill", "--teacher", tmp_path, "--data", train, "--eval", dev, "--student", "layers:2",
                      "--out", tmp_path / "st", "--epochs", "2", "--student-threads", "1", "--threads", "3",
                      "--batch-size", "8", "--guard-batch-size", "4", "--rounds", "2", "--alpha", "0.7")
    assert code == 2 and "stopped by the test" in out, out
    dcfg, params, guard = seen["distill"]
    assert (dcfg.student, dcfg.alpha, dcfg.temperature) == ("layers:2", 0.7, config.DistillConfig.temperature)
    assert params == {"epochs": 2, "threads": 1, "batch_size": 8}
    assert (guard.threads, guard.batch_size, guard.rounds, guard.max_drop) == (3, 4, 2, 1.0)


def test_cli_layout() -> None:
    """cli/__init__ builds the app only; command modules import nothing of niche.cli but _common; size limits."""
    sources = {p.stem: p.read_text(encoding="utf-8") for p in sorted(CLI_DIR.glob("*.py"))}
    assert {"__init__", "_common", "train", "compress", "serve", "pretrain"} <= set(sources)
    init = ast.parse(sources["__init__"])
    assert [n.name for n in init.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))] == ["main"]
    for stem, src in sources.items():
        tree = ast.parse(src)
        assert len(src.splitlines()) <= 450, f"cli/{stem}.py is over 450 lines"
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno + 1 <= 120, f"cli/{stem}.py: {node.name} is over 120 lines"
            if stem != "__init__" and isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.module == "_common", f"cli/{stem}.py imports from .{node.module or ''}"
                assert not any(a.name.startswith("_") for a in node.names), f"cli/{stem}.py imports a private name"
