"""Import of the published GESTURES features layout (mocked with a few tiny seizures)."""

import os

import numpy as np
import pytest
import torch

from gestures_hub import cli
from gestures_hub import features as F
from gestures_hub.gestures_import import import_gestures_features

CSV = """,Subject,Seizure,OnsetClonic,Discard,RatioGTCS
0,061,05,,,
1,061,07,12.5,Small,0.6
2,100,01,,Yes,
3,100,02,see notes,,0.5
4,007,03,,Large,
"""


def vector(view_id, index):
    return torch.full((512,), view_id * 1000.0 + index)


def make_root(tmp_path, lengths):
    root = tmp_path / "dataset"
    features_dir = root / "features_fpc_8_fps_15"
    for view_id, (name, n) in enumerate(lengths.items()):
        (features_dir / name).mkdir(parents=True)
        for index in range(n):
            torch.save(vector(view_id, index), features_dir / name / f"{index:05d}.pth")
    (root / "seizures.csv").write_text(CSV)
    return root


# view folder -> number of snippet files
LENGTHS = {
    "061_05_L": 3,
    "061_05_S": 4,
    "061_07_L": 5,
    "061_07_S": 2,
    "100_01_L": 2,
    "100_02_L": 2,
    "007_03_S": 12,
}


def test_import_into_the_features_schema(tmp_path):
    root = make_root(tmp_path, LENGTHS)
    out = tmp_path / "out"
    report = import_gestures_features(root, out, videos_per_shard=2, progress=False)
    assert report.imported == ["061_05_L", "061_05_S", "061_07_L", "100_02_L", "007_03_S"]
    assert sorted(report.discarded) == ["007_03_L", "061_07_S", "100_01_L", "100_01_S"]
    assert report.missing == ["100_02_S"]
    assert len(F.shard_paths(out)) == 3

    ds = F.load_features(out)
    assert F.dataset_settings(ds) | {"package_version": None} == {
        "encoder": "r2plus1d_34",
        "fps": 15.0,
        "frames_per_snippet": 8,
        "stride": 1,
        "feature_dim": 512,
        "image_size": 112,
        "model": "GESTURES published features (R(2+1)D-34 IG-65M + Kinetics; doi:10.5522/04/14781771)",
        "pretrained": True,
        "synthetic": False,
        "package_version": None,
    }
    rows = {r["video"]: r for r in ds.with_format("numpy")}
    assert set(rows) == set(report.imported)
    large = rows["061_07_L"]
    assert (large["patient"], large["seizure"], large["view"]) == ("061", "07", "Large")
    assert int(large["label"]) == 1
    assert large["onset_bilateral"] == pytest.approx(12.5)
    assert large["duration"] == pytest.approx((5 - 1 + 8) / 15)
    assert large["features"].shape == (5, 512) and large["features"].dtype == np.float32
    np.testing.assert_array_equal(large["features"][:, 0], [2000, 2001, 2002, 2003, 2004])  # time order
    np.testing.assert_allclose(large["start_times"], np.arange(5) / 15, rtol=1e-6)
    assert rows["061_05_S"]["view"] == "Small" and int(rows["061_05_S"]["label"]) == 0
    assert np.isnan(rows["061_05_S"]["onset_bilateral"])
    onset = rows["100_02_L"]["onset_bilateral"]  # OnsetClonic not a number: RatioGTCS x duration
    assert int(rows["100_02_L"]["label"]) == 1 and onset == pytest.approx(0.5 * (2 - 1 + 8) / 15)
    assert rows["007_03_S"]["patient"] == "007"  # leading zeros kept


def test_resume_skips_imported_views(tmp_path):
    root = make_root(tmp_path, LENGTHS)
    out = tmp_path / "out"
    import_gestures_features(root, out, progress=False)
    again = import_gestures_features(root, out, progress=False)
    assert again.imported == [] and len(again.already_present) == 5
    assert len(F.load_features(out)) == 5


class Payload:
    """Unpickling this would create a folder: code execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_with_code_is_rejected(tmp_path):
    root = make_root(tmp_path, LENGTHS)
    marker = tmp_path / "pwned"
    torch.save(Payload(str(marker)), root / "features_fpc_8_fps_15" / "061_07_L" / "00002.pth")
    with pytest.raises(ValueError, match=r"061_07_L/00002\.pth: refused, not a plain tensor file"):
        import_gestures_features(root, tmp_path / "out", progress=False)
    assert not marker.exists()
    assert F.completed_videos(tmp_path / "out") == {"061_05_L", "061_05_S"}  # finished views are kept


def test_cli(tmp_path, capsys):
    root = make_root(tmp_path, LENGTHS)
    assert cli.main(["import-gestures-features", str(root), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "Imported 5 view(s)" in captured.out and "100_02_S" in captured.err
    missing_root = ["import-gestures-features", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]
    assert cli.main(missing_root) == 1
    assert "features_fpc_8_fps_15 not found" in capsys.readouterr().err


def test_bad_inputs(tmp_path):
    root = make_root(tmp_path, {"061_05_L": 2})
    (root / "seizures.csv").write_text("Subject,Seizure,OnsetClonic,Discard\n061,05,,Maybe\n")
    with pytest.raises(ValueError, match="Discard must be"):
        import_gestures_features(root, tmp_path / "out", progress=False)
    (root / "seizures.csv").write_text("Subject,Seizure,OnsetClonic,Discard\n061,05,,\n061,05,,\n")
    with pytest.raises(ValueError, match=r"twice: \['061_05'\]"):
        import_gestures_features(root, tmp_path / "out", progress=False)
    (root / "seizures.csv").write_text("Subject,Seizure\n061,05\n")
    with pytest.raises(ValueError, match="lacks the column"):
        import_gestures_features(root, tmp_path / "out", progress=False)
    (root / "seizures.csv").write_text("Subject,Seizure,OnsetClonic,Discard\n061,05,,\n")
    torch.save(torch.zeros(3), root / "features_fpc_8_fps_15" / "061_05_L" / "00001.pth")
    with pytest.raises(ValueError, match=r"00001\.pth: expected a tensor of 512 values, got \(3,\)"):
        import_gestures_features(root, tmp_path / "out", progress=False)
