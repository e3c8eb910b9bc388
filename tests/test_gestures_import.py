"""Import of the published GESTURES features layout (mocked with a few tiny seizures)."""

import os
import re
import warnings

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


def make_root(tmp_path, lengths, csv=CSV):
    root = tmp_path / "dataset"
    features_dir = root / "features_fpc_8_fps_15"
    for view_id, (name, n) in enumerate(lengths.items()):
        (features_dir / name).mkdir(parents=True)
        for index in range(n):
            torch.save(vector(view_id, index), features_dir / name / f"{index:05d}.pth")
    (root / "seizures.csv").write_text(csv)
    return root


def load_rows(out):
    return {r["video"]: r for r in F.load_features(out).with_format("numpy")}


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
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # RatioGTCS and OnsetClonic agree, Discard values are all known
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
        "geometry": "crop_and_pad",
        "package_version": None,
    }
    rows = load_rows(out)
    assert set(rows) == set(report.imported)
    assert not any(r["discarded"] for r in rows.values())
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


def test_labels_follow_ratio_gtcs_and_disagreements_warn(tmp_path):
    csv = "Subject,Seizure,OnsetClonic,Discard,RatioGTCS\n001,01,3.0,,0.5\n001,02,,,0.25\n002,01,4.0,,\n"
    root = make_root(tmp_path, {"001_01_L": 7, "001_02_L": 7, "002_01_L": 7}, csv)
    message = (
        f"{root / 'seizures.csv'}: RatioGTCS and OnsetClonic disagree, labels follow RatioGTCS: "
        "TCS without OnsetClonic ['001_02'], FOS with OnsetClonic ['002_01']"
    )
    with pytest.warns(UserWarning, match=f"^{re.escape(message)}$"):
        report = import_gestures_features(root, tmp_path / "out", progress=False)
    rows = load_rows(tmp_path / "out")
    assert report.imported == ["001_01_L", "001_02_L", "002_01_L"]
    assert [int(rows[v]["label"]) for v in report.imported] == [1, 1, 0]
    assert rows["001_01_L"]["onset_bilateral"] == pytest.approx(3.0)  # OnsetClonic first
    assert rows["001_02_L"]["onset_bilateral"] == pytest.approx(0.25 * (7 - 1 + 8) / 15)  # RatioGTCS x duration
    assert np.isnan(rows["002_01_L"]["onset_bilateral"])  # FOS: no onset


def test_boolean_gtcs_column_without_onset_clonic(tmp_path):
    csv = "Subject,Seizure,Discard,GTCS\n001,01,,True\n001,02,,False\n001,03,,1\n001,04,,0\n001,05,,yes\n001,06,,NO\n"
    lengths = {f"001_0{i}_L": 2 for i in range(1, 7)}
    root = make_root(tmp_path, lengths, csv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = import_gestures_features(root, tmp_path / "out", progress=False)
    rows = load_rows(tmp_path / "out")
    assert [int(rows[v]["label"]) for v in report.imported] == [1, 0, 1, 0, 1, 0]
    assert all(np.isnan(r["onset_bilateral"]) for r in rows.values())  # no OnsetClonic, no RatioGTCS

    (root / "seizures.csv").write_text("Subject,Seizure,Discard,GTCS,RatioGTCS\n001,01,,False,0.5\n001,02,,True,\n")
    import_gestures_features(root, tmp_path / "out2", progress=False)
    rows = load_rows(tmp_path / "out2")
    assert [int(rows[f"001_0{i}_L"]["label"]) for i in (1, 2)] == [1, 0]  # RatioGTCS wins over GTCS

    (root / "seizures.csv").write_text("Subject,Seizure,Discard,GTCS\n001,01,,True\n001,02,,maybe\n001,03,,\n")
    with pytest.raises(ValueError, match=r"seizures\.csv: GTCS must be True/False, 1/0 or yes/no, got "
                       r"\{'001_02': 'maybe', '001_03': ''\}"):
        import_gestures_features(root, tmp_path / "out3", progress=False)


def test_csv_without_a_label_column_is_refused(tmp_path):
    root = make_root(tmp_path, {"001_01_L": 2}, "Subject,Seizure,OnsetClonic,Discard\n001,01,3.0,\n")
    message = (
        f"{root / 'seizures.csv'}: no column gives the TCS label; found the columns "
        "['Subject', 'Seizure', 'OnsetClonic', 'Discard'], accepted: RatioGTCS (filled = TCS) or GTCS "
        "(True/False, 1/0, yes/no)"
    )
    with pytest.raises(ValueError) as error:
        import_gestures_features(root, tmp_path / "out", progress=False)
    assert str(error.value) == message
    assert not (tmp_path / "out").exists()


DISCARD_CSV = """Subject,Seizure,OnsetClonic,Discard,RatioGTCS
001,01,,yes,
001,02,,,
001,03,,both,
001,04,,Yes,
001,05,2.0,Large,0.5
001,06,,L,
"""
DISCARD_LENGTHS = {f"001_0{i}_{code}": 2 for i in range(1, 7) for code in "LS"}
DISCARD_WARNING = (
    "seizures.csv: Discard values other than Yes, Large, Small or empty, treated as not discarded: "
    "{'001_01': 'yes', '001_03': 'both', '001_06': 'L'}"
)


def test_discard_is_matched_exactly(tmp_path):
    root = make_root(tmp_path, DISCARD_LENGTHS, DISCARD_CSV)
    with pytest.warns(UserWarning, match=f"^{re.escape(f'{root}/{DISCARD_WARNING}')}$"):
        report = import_gestures_features(root, tmp_path / "out", progress=False)
    rows = load_rows(tmp_path / "out")
    assert report.discarded == ["001_04_L", "001_04_S", "001_05_L"]
    assert report.imported == ["001_01_L", "001_01_S", "001_02_L", "001_02_S", "001_03_L", "001_03_S", "001_05_S",
                               "001_06_L", "001_06_S"]
    assert set(rows) == set(report.imported) and not any(r["discarded"] for r in rows.values())


def test_include_discarded_flags_rows(tmp_path):
    root = make_root(tmp_path, DISCARD_LENGTHS, DISCARD_CSV)
    with pytest.warns(UserWarning, match=re.escape(DISCARD_WARNING)):
        report = import_gestures_features(root, tmp_path / "out", include_discarded=True, progress=False)
    rows = load_rows(tmp_path / "out")
    assert report.discarded == ["001_04_L", "001_04_S", "001_05_L"]
    assert sorted(report.imported) == sorted(DISCARD_LENGTHS)
    assert {v for v, r in rows.items() if r["discarded"]} == set(report.discarded)
    assert int(rows["001_05_L"]["label"]) == 1 and rows["001_05_L"]["onset_bilateral"] == pytest.approx(2.0)


def test_resume_skips_imported_views(tmp_path):
    root = make_root(tmp_path, LENGTHS)
    out = tmp_path / "out"
    import_gestures_features(root, out, progress=False)
    again = import_gestures_features(root, out, progress=False)
    assert again.imported == [] and len(again.already_present) == 5
    assert len(F.load_features(out)) == 5
    more = import_gestures_features(root, out, include_discarded=True, progress=False)  # adds the discarded views
    assert more.imported == ["061_07_S", "100_01_L"] and more.missing == ["100_01_S", "100_02_S", "007_03_L"]
    assert len(F.load_features(out)) == 7


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
    assert "Imported 5 view(s) into" in captured.out and "4 marked in Discard, left out" in captured.out
    assert "100_02_S" in captured.err
    missing_root = ["import-gestures-features", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]
    assert cli.main(missing_root) == 1
    assert "features_fpc_8_fps_15 not found" in capsys.readouterr().err


def test_cli_include_discarded(tmp_path, capsys):
    root = make_root(tmp_path, DISCARD_LENGTHS, DISCARD_CSV)
    out = tmp_path / "out"
    assert cli.main(["import-gestures-features", str(root), "--out", str(out), "--include-discarded"]) == 0
    captured = capsys.readouterr()
    assert "Imported 12 view(s) into" in captured.out
    assert "3 marked in Discard, imported with discarded=True" in captured.out
    assert f"gestures import-gestures-features: warning: {root}/{DISCARD_WARNING}" in captured.err
    assert sum(F.load_features(out)["discarded"]) == 3


def test_bad_inputs(tmp_path):
    root = make_root(tmp_path, {"061_05_L": 2})
    (root / "seizures.csv").write_text("Subject,Seizure,OnsetClonic,Discard,RatioGTCS\n061,05,,,\n061,05,,,\n")
    with pytest.raises(ValueError, match=r"twice: \['061_05'\]"):
        import_gestures_features(root, tmp_path / "out", progress=False)
    (root / "seizures.csv").write_text("Subject,Seizure,RatioGTCS\n061,05,\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['Discard'\]"):
        import_gestures_features(root, tmp_path / "out", progress=False)
    (root / "seizures.csv").write_text("Subject,Seizure,OnsetClonic,Discard,RatioGTCS\n061,05,,,\n")
    torch.save(torch.zeros(3), root / "features_fpc_8_fps_15" / "061_05_L" / "00001.pth")
    with pytest.raises(ValueError, match=r"00001\.pth: expected a tensor of 512 values, got \(3,\)"):
        import_gestures_features(root, tmp_path / "out", progress=False)
