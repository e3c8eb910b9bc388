"""How fast the command line answers: ``gestures --help``, each ``gestures COMMAND --help``, ``import gestures_hub``.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 3]

Each is run in a fresh interpreter (the median of ``--repeats`` runs is shown, with the first, colder one); the table
also says whether torch was imported. Target: <= 1 s each, without torch.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

from gestures_hub.commands import COMMANDS

PROBE = """
import sys
from gestures_hub.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)
"""
IMPORT = "import sys, gestures_hub\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)"


def timed(code: str, *argv: str) -> tuple[float, bool]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, result.stderr.strip().endswith("TORCH") and "NO-TORCH" not in result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (default: 3)")
    args = parser.parse_args()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}")
    cases = [("import gestures_hub", IMPORT, []), ("gestures --help", PROBE, ["--help"])]
    cases += [(f"gestures {name} --help", PROBE, [name, "--help"]) for name in COMMANDS]
    print("\n| command | first run | median | torch imported |\n|---|---|---|---|")
    worst = 0.0
    for label, code, argv in cases:
        runs = [timed(code, *argv) for _ in range(args.repeats)]
        median = statistics.median(seconds for seconds, _ in runs)
        worst = max(worst, median)
        print(f"| {label} | {runs[0][0]:.2f} s | {median:.2f} s | {'yes' if any(t for _, t in runs) else 'no'} |")
    print(f"\nSlowest median: {worst:.2f} s (target <= 1 s): {'PASS' if worst <= 1 else 'FAIL'}")


if __name__ == "__main__":
    main()
