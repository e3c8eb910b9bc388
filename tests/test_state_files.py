"""State files that --resume reads are written atomically, and a damaged one is named with the way out."""

import json

import pytest
from helpers import noisy_dataset

from gestures_hub import features
from gestures_hub.arguments import TrainingArguments
from gestures_hub.features import read_json_state, write_json
from gestures_hub.train import train


def tiny_args(features_dir, output_dir, **overrides) -> TrainingArguments:
    return TrainingArguments(features=features_dir, output_dir=str(output_dir), num_segments=4, hidden_size=4,
                             folds=2, epochs=2, batch_size=8, **overrides)


def test_a_write_killed_midway_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch):
    path = write_json(tmp_path / "results.json", {"fold": 0, "best_epoch": 3})

    def killed(file):  # the process dies after half of the bytes
        file.write(b'{"fold": 0, "best_ep')
        raise KeyboardInterrupt

    monkeypatch.setattr(features.json, "dumps", lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"fold": 0, "best_epoch": 9})
    monkeypatch.undo()
    with pytest.raises(KeyboardInterrupt):
        features.atomic_write(path, killed)
    assert json.loads(path.read_text()) == {"fold": 0, "best_epoch": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary file left


@pytest.mark.parametrize(("name", "what", "finished"), [
    ("training_args.json", "the arguments of this run", True),
    ("fold-0/results.json", "the evaluation of fold 0", True),
    ("fold-0/checkpoint/trainer_state.json", "the trainer state of a checkpoint", False),
])
def test_resume_names_a_half_written_state_file(tmp_path, name, what, finished):
    """A half file (written by an older version killed mid-write) stops --resume with its name and what to do."""
    features_dir = noisy_dataset(tmp_path / "f")
    out = tmp_path / "run"
    train(tiny_args(features_dir, out, max_epochs_this_run=1))  # stopped in fold 0, after its first checkpoint
    if finished:
        train(tiny_args(features_dir, out, resume=True))  # every state file exists
    state = out / name
    assert state.is_file(), sorted(str(p.relative_to(out)) for p in out.rglob("*.json"))
    state.write_text(state.read_text()[: len(state.read_text()) // 2])
    with pytest.raises(ValueError, match=rf"{state.name} \({what}\) is damaged.*Delete it to redo that part"):
        train(tiny_args(features_dir, out, resume=True))


def test_read_json_state_reads_what_write_json_wrote(tmp_path):
    data = {"a": [1, 2.5, None], "b": "x"}
    assert read_json_state(write_json(tmp_path / "deep" / "s.json", data), "a test") == data
