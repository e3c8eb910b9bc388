"""The README's two set-up commands: the second is what .ci/run runs, and it provides Chromium where it is absent."""

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Set-up (two commands)", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_the_readme_gives_two_commands_and_ci_runs_the_second():
    install, test = setup_commands()
    assert "pip install -e" in install and install.rstrip().endswith(".venv/bin/gestures quickstart")
    assert test == "bash scripts/test.sh"
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == test  # exactly the README's test command, last


def test_the_test_command_installs_chromium_gxx_and_ffmpeg_where_they_are_absent(tmp_path):
    """Run scripts/test.sh with a PATH that has none of chromium, g++ and ffmpeg and a stand-in apt-get (which
    'installs' what it is asked for): the script asks apt-get for all three, then runs pytest in the project's
    environment (here: collecting one small file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "id", "chmod"):
        (bin_dir / tool).symlink_to(next(Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists()))
    log = tmp_path / "apt-get.log"
    (bin_dir / "apt-get").write_text(f"#!/bin/bash\necho \"$@\" >> {log}\n"
                                     f"if [ \"$1\" = install ]; then for tool in \"${{@:4}}\"; do "
                                     f"printf '#!/bin/bash\\n' > {bin_dir}/$tool; chmod +x {bin_dir}/$tool; done; fi\n")
    (bin_dir / "apt-get").chmod(0o755)
    if os.getuid() != 0:  # as a user, the script asks sudo; the stand-in just runs the command
        (bin_dir / "sudo").write_text('#!/bin/bash\n"$@"\n')
        (bin_dir / "sudo").chmod(0o755)
    result = subprocess.run(["/bin/bash", str(REPO / "scripts" / "test.sh"), "--collect-only", "-q",
                             "tests/test_splits.py"], cwd=tmp_path, env={**os.environ, "PATH": str(bin_dir)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "installing chromium g++ ffmpeg with apt-get (needed by the tests)" in result.stderr
    assert log.read_text().splitlines() == ["update -qq", "install -y -qq chromium g++ ffmpeg"]
    assert "tests collected" in result.stdout or "test_splits.py" in result.stdout


def test_the_test_command_alone_creates_the_environment_on_a_fresh_clone(tmp_path):
    """On a clone without ``.venv``, scripts/test.sh creates it and installs the dev extra before running pytest (here
    with a stand-in python3 whose venv's python logs what it is asked to run)."""
    clone, bin_dir, log = tmp_path / "clone", tmp_path / "bin", tmp_path / "python.log"
    (clone / "scripts").mkdir(parents=True)
    (clone / "scripts" / "test.sh").write_text((REPO / "scripts" / "test.sh").read_text())
    bin_dir.mkdir()
    for tool in ("dirname", "chromium", "g++", "ffmpeg"):
        (bin_dir / tool).symlink_to("/bin/true" if tool != "dirname" else
                                    next(Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists()))
    venv_python = f'#!/bin/bash\\necho "venv python $*" >> {log}\\n'
    (bin_dir / "python3").write_text(f'#!/bin/bash\necho "python3 $*" >> {log}\n'
                                     f'/bin/mkdir -p "$3/bin" && printf \'{venv_python}\' > "$3/bin/python" '
                                     f'&& /bin/chmod +x "$3/bin/python"\n')
    (bin_dir / "python3").chmod(0o755)
    result = subprocess.run(["/bin/bash", str(clone / "scripts" / "test.sh"), "-x"], cwd=tmp_path,
                            env={**os.environ, "PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert log.read_text().splitlines() == ["python3 -m venv .venv",
                                            "venv python -m pip install --quiet --upgrade pip",
                                            "venv python -m pip install --quiet -e .[dev]",
                                            "venv python -m pytest -q -x"]
    assert (clone / ".venv" / "bin" / "python").is_file()
