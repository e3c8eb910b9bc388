"""Manifests as spreadsheets write them (BOM, semicolons, tabs); video paths stay inside the manifest's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from gestures_hub.extract import extract, read_manifest

HEADER = ("video", "patient", "seizure", "label")


def write(folder: Path, rows: list[tuple[str, ...]], *, delimiter: str = ",", encoding: str = "utf-8") -> Path:
    path = folder / "manifest.csv"
    path.write_bytes("\r\n".join(delimiter.join(row) for row in [HEADER, *rows]).encode(encoding) + b"\r\n")
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"], ids=["plain", "BOM"])
@pytest.mark.parametrize("delimiter", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
def test_spreadsheet_manifests_are_read(tmp_path: Path, delimiter: str, encoding: str) -> None:
    """Excel's "CSV UTF-8" starts with a BOM; in many locales it separates columns by semicolons."""
    manifest = write(tmp_path, [("a.mp4", "p1", "s1", "FOS"), ("clips/b.mp4", "p2", "s1", "TCS")],
                     delimiter=delimiter, encoding=encoding)
    rows = read_manifest(manifest)
    assert [(row.video, row.patient, row.label) for row in rows] == [("a.mp4", "p1", "FOS"),
                                                                     ("clips/b.mp4", "p2", "TCS")]
    assert rows[1].path == tmp_path.resolve() / "clips" / "b.mp4"


def test_missing_columns_show_the_header_found(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("Video|Patient|Seizure|Label\na.mp4|p1|s1|FOS\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) video, patient, seizure, label \(its header has: "
                                         r"Video\|Patient\|Seizure\|Label\); it needs video, patient, seizure, label"):
        read_manifest(manifest)


def test_a_manifest_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    manifest = write(tmp_path, [("séance.mp4", "p1", "s1", "FOS")], encoding="latin-1")
    with pytest.raises(ValueError, match=r"manifest.csv is not UTF-8 text \('utf-8' codec can't decode byte 0xe9 .*\); "
                                         r"save it as UTF-8 \(Excel: CSV UTF-8\)\."):
        read_manifest(manifest)


def test_video_ids_are_paths_relative_to_the_manifest_folder(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "real.mp4").touch()
    (tmp_path / "alias.mp4").symlink_to(tmp_path / "clips" / "real.mp4")  # a link inside the folder is fine
    rows = read_manifest(write(tmp_path, [("./a.mp4", "p1", "s1", "FOS"), ("clips/../b.mp4", "p1", "s2", "FOS"),
                                          (str(tmp_path / "clips" / "c.mp4"), "p1", "s3", "FOS"),
                                          ("alias.mp4", "p1", "s4", "")]))
    assert [row.video for row in rows] == ["a.mp4", "b.mp4", "clips/c.mp4", "alias.mp4"]
    with pytest.raises(ValueError, match="lists these videos more than once: a.mp4"):
        read_manifest(write(tmp_path, [("a.mp4", "p1", "s1", "FOS"), ("./a.mp4", "p1", "s2", "FOS")]))


@pytest.mark.parametrize("kind", ["parent", "dotdot", "absolute", "passwd", "symlink"])
def test_paths_leaving_the_manifest_folder_are_refused_unless_allowed(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "cohort"
    folder.mkdir()
    (tmp_path / "outside.mp4").touch()
    (folder / "link.mp4").symlink_to(tmp_path / "outside.mp4")
    written, target = {
        "parent": ("../outside.mp4", tmp_path / "outside.mp4"),
        "dotdot": ("clips/../../outside.mp4", tmp_path / "outside.mp4"),
        "absolute": (str(tmp_path / "outside.mp4"), tmp_path / "outside.mp4"),
        "passwd": ("../" * 40 + "etc/passwd", Path("/etc/passwd")),
        "symlink": ("link.mp4", tmp_path / "outside.mp4"),
    }[kind]
    manifest = write(folder, [("good.mp4", "p1", "s1", "FOS"), (written, "p1", "s2", "TCS")])
    message = (f"Manifest {manifest}, line 3: the video path {written!r} leads outside the manifest's folder "
               f"{folder.resolve()} (to {target.resolve()}). Move the video into that folder, or allow such paths "
               "(allow_outside_paths=True, --allow-outside-paths) if you trust the manifest.")
    with pytest.raises(ValueError) as error:
        read_manifest(manifest)
    assert str(error.value) == message
    with pytest.raises(ValueError, match="leads outside the manifest's folder"):  # before any work
        extract(manifest, "tiny-videomae", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    good, outside = read_manifest(manifest, allow_outside_paths=True)
    assert (good.video, good.path) == ("good.mp4", folder.resolve() / "good.mp4")
    assert outside.video == ("link.mp4" if kind == "symlink" else written)  # as written when outside the folder
    assert outside.path.resolve() == target.resolve()
