"""The command line answers at once and explains itself: no torch for --help, one default per option, usage errors."""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gestures_hub.arguments import AGGREGATIONS
from gestures_hub.cli import build_parser, main
from gestures_hub.commands import COMMANDS

REPO = Path(__file__).resolve().parents[1]
MARKUP = re.compile(r"``|:mod:|:func:|:class:|:meth:")

NO_HEAVY_IMPORTS = """
import sys
from gestures_hub.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(name for name in ("torch", "transformers", "datasets", "av", "accelerate") if name in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    return build_parser()._subparsers._group_actions[0].choices


def test_help_imports_neither_torch_nor_transformers():
    """In a fresh process (this checkout first on the path): --help of the tool and of every command."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for argv in (["--help"], *([name, "--help"] for name in COMMANDS)):
        result = subprocess.run([sys.executable, "-c", NO_HEAVY_IMPORTS, *argv], capture_output=True, text=True,
                                env=env, timeout=60)
        assert result.stdout.strip().endswith("HEAVY:"), (argv, result.stdout[-300:], result.stderr[-500:])
        assert "usage: gestures" in result.stdout, argv
    result = subprocess.run([sys.executable, "-c", "import sys, gestures_hub; print('torch' in sys.modules)"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.strip() == "False"  # import gestures_hub stays cheap: the model loads on first use


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_says_what_it_does_and_its_one_default(name):
    parser = subcommand_parsers()[name]
    assert parser.description and not MARKUP.search(parser.description), parser.description
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = action.help or ""
        flag = action.option_strings[0] if action.option_strings else action.dest
        assert len(text.split()) >= 3, f"{name} {flag}: {text!r} explains nothing"
        assert not MARKUP.search(text), f"{name} {flag}: markup in {text!r}"
        assert text.count("(default") <= 1, f"{name} {flag}: two defaults in {text!r}"
        assert text.replace("_", " ").strip() != action.dest.replace("_", " "), f"{name} {flag}: help is the name"
        if action.required and action.option_strings:
            assert "(required)" in text, f"{name} {flag} is required but its help does not say so"
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            assert "default" in text, f"{name} {flag}: default {action.default!r} not stated in {text!r}"
    assert "(default: None)" not in parser.format_help()


def test_missing_and_conflicting_options_are_usage_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as missing:
        main(["train"])
    assert missing.value.code == 2 and "the following arguments are required: --output-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as conflicting:
        main(["train", "--output-dir", str(tmp_path), "--features", "f", "--train-encoder"])
    err = capsys.readouterr().err
    assert conflicting.value.code == 2 and "usage: gestures train" in err
    assert "--features and --train-encoder exclude each other" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as quickstart:
        main(["quickstart", "--patients", "3", "--folds", "4", "--out", str(tmp_path / "q")])
    assert quickstart.value.code == 2 and "--patients must be at least --folds + 1 = 5" in capsys.readouterr().err


def test_the_cli_aggregations_are_the_model_configs():
    from gestures_hub.model.configuration_gestures import AGGREGATIONS as MODEL_AGGREGATIONS

    assert AGGREGATIONS == MODEL_AGGREGATIONS


def test_python_m_train_uses_the_same_parser(capsys):
    from gestures_hub.train import main as train_main

    with pytest.raises(SystemExit) as done:
        train_main(["--help"])
    assert done.value.code == 0 and "usage: gestures_hub.train" in capsys.readouterr().out


def test_openmp_waits_passively_unless_the_user_says_otherwise():
    """Spinning OpenMP threads collapse on a shared machine (benchmarks/shared_machine.py): the package asks for
    passive waiting before torch loads OpenMP, and leaves a user's own choice alone."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    probe = "import os, gestures_hub; print(os.environ['OMP_WAIT_POLICY'])"
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                                env={**env, **({"OMP_WAIT_POLICY": given} if given else {})})
        assert result.stdout.strip() == expected
