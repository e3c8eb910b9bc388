"""Why a shared machine slowed ``gestures quickstart`` 20x, and the fix: OpenMP's waiting policy.

    .venv/bin/python benchmarks/shared_machine.py [--jobs 6] [--seconds 40]

Times one piece of real work (the demo model's encoder on 6 batches of 64 snippets) in a fresh process, on a quiet
machine and while ``--jobs`` other PyTorch processes (2 threads each, matrix products in a loop) share the cores, with
OpenMP's default (spinning) wait and with ``OMP_WAIT_POLICY=PASSIVE`` (what ``import gestures_hub`` sets unless the
user set it), and with one thread. Commands should slow down in proportion to the load, not collapse.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

WORK = """
import time, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from gestures_hub.presets import load_model
model, _ = load_model("gestures-demo")
x = torch.randn(64, 3, 8, 64, 64)
start = time.perf_counter()
with torch.no_grad():
    for _ in range(6):
        model.gestures.encode_snippets(x)
print(time.perf_counter() - start)
"""
LOAD = """
import sys, time, torch
torch.set_num_threads(2)
a = torch.randn(512, 512)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    (a @ a).sum()
"""


def work(policy: str | None, threads: int) -> float:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    # the probe imports torch before gestures_hub sets its default: this measures the policy given here
    code = "import torch\n" + WORK
    result = subprocess.run([sys.executable, "-c", code, str(threads)], env=env, capture_output=True, text=True,
                            check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=6, help="competing 2-thread PyTorch processes (default: 6)")
    parser.add_argument("--seconds", type=float, default=40, help="how long the competing load runs (default: 40)")
    args = parser.parse_args()
    cases = [("default (spinning) wait, 2 threads", None, 2), ("OMP_WAIT_POLICY=PASSIVE, 2 threads", "PASSIVE", 2),
             ("1 thread", None, 1)]
    print(f"Machine: {os.cpu_count()} cores, load average before: {os.getloadavg()[0]:.1f}")
    quiet = {label: work(policy, threads) for label, policy, threads in cases}
    load = [subprocess.Popen([sys.executable, "-c", LOAD, str(args.seconds)]) for _ in range(args.jobs)]
    time.sleep(3)
    try:
        loaded = {label: work(policy, threads) for label, policy, threads in cases}
    finally:
        for process in load:
            process.kill()
    print(f"\n| waiting | quiet | with {args.jobs} other jobs | slowdown |\n|---|---|---|---|")
    for label, _, _ in cases:
        print(f"| {label} | {quiet[label]:.2f} s | {loaded[label]:.2f} s | {loaded[label] / quiet[label]:.1f}x |")


if __name__ == "__main__":
    main()
