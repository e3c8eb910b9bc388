"""The command line entry points."""

import subprocess
import sys

from helpers import checkout_env

from gestures_hub.cli import main


def test_module_entry_point_prints_help():
    result = subprocess.run([sys.executable, "-m", "gestures_hub", "--help"], capture_output=True, text=True,
                            timeout=120, env=checkout_env())
    assert result.returncode == 0
    assert "usage: gestures" in result.stdout and "not a medical device" in result.stdout
    assert "presets" in result.stdout


def test_presets_command_lists_the_paper_models(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert {"gestures-blstm", "gestures-lstm", "gestures-mean", "tiny-features"} <= set(names)
    assert any("BLSTM(64)" in line for line in lines if line.startswith("gestures-blstm "))
