"""Do the tests catch wrong answers? Plant deliberate bugs, one at a time, and see which test fails.

For each mutation the repository's files (``git ls-files``: tracked and untracked-but-not-ignored, as they are in the
working tree) are copied to a temporary folder, the bug is applied there as a text substitution (the script stops if
a pattern is not found exactly once), and the mutation's pytest selection runs in the copy with ``-x -q`` and the copy
first on ``PYTHONPATH``. The table lists, per mutation, the first test that failed, or NOT CAUGHT.

    .venv/bin/python scripts/mutation_check.py                 # every mutation (a few minutes on 2 cores)
    .venv/bin/python scripts/mutation_check.py --only lr-swap   # some of them
    .venv/bin/python scripts/mutation_check.py --baseline       # also run each selection unmutated (must pass)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    description: str
    path: str
    """File to mutate, relative to the repository."""
    substitutions: tuple[tuple[str, str], ...]
    """(old, new) pairs; each ``old`` must occur exactly once in the file."""
    tests: tuple[str, ...]
    """pytest selection (paths, node ids, ``-k`` expressions) expected to catch it."""


MUTATIONS = (
    Mutation(
        "id2label", "FOS and TCS swapped in the default labels", "gestures_hub/model/configuration_gestures.py",
        (('"id2label", {0: "FOS", 1: "TCS"}', '"id2label", {0: "TCS", 1: "FOS"}'),),
        ("tests/test_modeling.py",),
    ),
    Mutation(
        "snippet-mean-logits", "the mean of snippet_logits returned as logits",
        "gestures_hub/model/modeling_gestures.py",
        (("        loss = None\n        if labels is not None:\n",
          "        if snippet_logits is not None:\n            logits = snippet_logits.mean(1)\n"
          "        loss = None\n        if labels is not None:\n"),),
        ("tests/test_modeling.py",),
    ),
    Mutation(
        "kinetics-swap", "Kinetics mean and std swapped", "gestures_hub/model/configuration_gestures.py",
        (("KINETICS_MEAN = (0.43216, 0.394666, 0.37645)\nKINETICS_STD = (0.22803, 0.22145, 0.216989)",
          "KINETICS_MEAN = (0.22803, 0.22145, 0.216989)\nKINETICS_STD = (0.43216, 0.394666, 0.37645)"),),
        ("tests/test_extract_reference.py",),
    ),
    Mutation(
        "rank1-half-gradient", "gradients of rank 1 halved (its loss scaled by world / 2)", "gestures_hub/train.py",
        (("accelerator.backward(loss * world)", "accelerator.backward(loss * world * (0.5 if rank == 1 else 1.0))"),),
        ("tests/test_train.py::test_two_processes_match_one",),
    ),
    Mutation(
        "lr-swap", "encoder and head learning rates swapped in parameter_groups", "gestures_hub/train.py",
        (("if id(parameter) not in encoder_ids]}",
          'if id(parameter) not in encoder_ids], "lr": args.encoder_learning_rate}'),
         ('{"params": encoder, "lr": args.encoder_learning_rate}', '{"params": encoder, "lr": args.learning_rate}')),
        ("tests/test_finetune.py", "-k", "parameter_groups or batch_norm"),
    ),
    Mutation(
        "no-stratification", "patient folds no longer stratified (labels shuffled before StratifiedGroupKFold)",
        "gestures_hub/splits.py",
        (('splitter.split(frame, frame["label"], frame["patient"])',
          'splitter.split(frame, np.random.default_rng(seed).permutation(frame["label"]), frame["patient"])'),),
        ("tests/test_splits.py",),
    ),
    Mutation(
        "reproduce-weighted-default", "gestures reproduce defaults to the weighted loss, not the paper's",
        "gestures_hub/arguments.py",
        (('loss: str = field(default="original"', 'loss: str = field(default="weighted"'),),
        ("tests/test_reproduce.py::test_a_stack_of_models_equals_single_runs",
         "tests/test_train.py::test_command_line"),
    ),
    Mutation(
        "reproduce-passes-weighted", "gestures reproduce trains its models with the weighted loss whatever --loss says",
        "gestures_hub/reproduce.py",
        (("sample_losses(logits, batch_labels, options.loss, weights)",
          'sample_losses(logits, batch_labels, "weighted", weights)'),
         ("loss_norms(batch_labels, options.loss, weights)", 'loss_norms(batch_labels, "weighted", weights)'),
         ("loss_weights(bank.labels[videos], options.loss)", 'loss_weights(bank.labels[videos], "weighted")')),
        ("tests/test_reproduce.py::test_a_stack_of_models_equals_single_runs",),
    ),
)


def repository_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout
    return [name for name in listed.split("\0") if name and (REPO / name).is_file()]


def copy_repository(target: Path) -> None:
    for name in repository_files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)


def apply(mutation: Mutation, root: Path) -> None:
    path = root / mutation.path
    text = path.read_text()
    for old, new in mutation.substitutions:
        count = text.count(old)
        if count != 1:
            raise SystemExit(f"{mutation.name}: expected the pattern once in {mutation.path}, found it {count} "
                             f"times:\n{old}")
        text = text.replace(old, new)
    path.write_text(text)


def run_tests(root: Path, tests: tuple[str, ...]) -> tuple[str, float]:
    """The first failing test of the selection in ``root`` ("" when all pass) and the seconds it took."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=root,
                          env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode == 0:
        return "", seconds
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, flags=re.MULTILINE)
    return (failed[0] if failed else f"pytest exit code {done.returncode}: {done.stdout[-300:]!r}"), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[mutation.name for mutation in MUTATIONS], help="mutations to run")
    parser.add_argument("--baseline", action="store_true", help="first check that each selection passes unmutated")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies (their paths are printed)")
    args = parser.parse_args(argv)
    chosen = [mutation for mutation in MUTATIONS if not args.only or mutation.name in args.only]
    rows, missed = [], 0
    for mutation in chosen:
        root = Path(tempfile.mkdtemp(prefix=f"mutation-{mutation.name}-"))
        try:
            copy_repository(root)
            if args.baseline:
                failed, _ = run_tests(root, mutation.tests)
                if failed:
                    raise SystemExit(f"{mutation.name}: the selection fails without the mutation: {failed}")
            apply(mutation, root)
            failed, seconds = run_tests(root, mutation.tests)
        finally:
            if args.keep:
                print(f"kept {root}", file=sys.stderr)
            else:
                shutil.rmtree(root, ignore_errors=True)
        missed += not failed
        rows.append((mutation.name, mutation.description, failed or "NOT CAUGHT", f"{seconds:.0f} s"))
        print(f"{rows[-1][0]}: {rows[-1][2]} ({rows[-1][3]})", file=sys.stderr, flush=True)
    header = ("mutation", "bug", "first failing test", "time")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * width for width in widths), *rows]:
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
