"""The optional torchcodec decoder: PyAV's frame times exactly, its pixels within the stated tolerance, the same
features; chosen automatically only on CUDA and only when faithful; clear errors otherwise. Run on the CPU (torchcodec's
CPU device), so that on a GPU only the device differs."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import av
import datasets
import numpy as np
import pytest
import torch
from video_fixtures import make_bad

from gestures_hub import GesturesForVideoClassification, torchcodec_decode
from gestures_hub.cli import main
from gestures_hub.model.video_reader import DecodeReport, VideoError, iter_frames
from gestures_hub.presets import get_config
from gestures_hub.sample_videos import write_test_video
from gestures_hub.torchcodec_decode import (
    MAX_MEAN_LEVELS,
    MAX_P99_LEVELS,
    Faithfulness,
    area_weights,
    choose_decoder,
    compare_decoders,
    resize_like_swscale,
)
from gestures_hub.torchcodec_decode import iter_frames as torchcodec_frames

VFR_TIMES = [0.0, 0.1, 0.15, 0.5, 0.52, 1.0, 1.01, 1.7, 2.3, 2.35, 2.9]
CPU = torch.device("cpu")
FRAMES_AT_15_FPS = {"640x480_30fps": 30, "320x180_60fps": 23, "rotated_90": 15, "vfr_160x120": 45, "bt709_ffmpeg": 15}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {
        "640x480_30fps": write_test_video(folder / "a.mp4", duration=2.0, fps=30, size=(640, 480), pattern="bar"),
        "320x180_60fps": write_test_video(folder / "b.mp4", duration=1.5, fps=60, size=(320, 180),
                                          pattern="texture"),
        "rotated_90": write_test_video(folder / "c.mp4", duration=1.0, fps=25, size=(320, 180), pattern="shapes",
                                       rotation=90),
        "vfr_160x120": write_test_video(folder / "d.mp4", duration=3.0, fps=30, size=(160, 120), pattern="bar",
                                        vfr_timestamps=VFR_TIMES),
        "bt709_ffmpeg": write_bt709(folder / "e.mp4"),
    }


def write_bt709(path: Path) -> Path:
    """FFmpeg's test pattern as BT.709 H.264 (as cameras and phones tag theirs), with the ffmpeg binary."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "1",
                    "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p", "-c:v", "libx264", "-threads",
                    "1", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", str(path)],
                   check=True, timeout=60)
    return path


@pytest.mark.parametrize("geometry", ["crop_and_pad", "center_crop"])
@pytest.mark.parametrize("name", ["640x480_30fps", "320x180_60fps", "rotated_90", "vfr_160x120", "bt709_ffmpeg"])
def test_torchcodec_gives_pyavs_frame_times_exactly_and_its_pixels_within_tolerance(videos, name, geometry):
    path = videos[name]
    reference = list(iter_frames(path, fps=15, size=112, geometry=geometry))
    decoded = list(torchcodec_frames(path, fps=15, size=112, geometry=geometry, device=CPU))
    assert [time for time, _ in decoded] == [time for time, _ in reference]
    assert all(rgb.shape == (112, 112, 3) and rgb.dtype == np.uint8 for _, rgb in decoded)
    check = compare_decoders(path, fps=15, size=112, geometry=geometry, frames=len(reference))
    assert check.same_times and check.frames == len(reference) == FRAMES_AT_15_FPS[name]
    assert check.faithful, check.describe()
    assert check.mean <= MAX_MEAN_LEVELS and check.p99 <= MAX_P99_LEVELS
    # the same pictures, not merely similar statistics: the first frame is closer to PyAV's first than to a later one
    # (the bar moves, the texture drifts, the shapes bounce)
    first, later = reference[0][1].astype(int), reference[len(reference) // 2][1].astype(int)
    assert np.abs(decoded[0][1] - first).mean() < np.abs(decoded[0][1] - later).mean()


def test_a_rotated_video_is_turned_upright_as_pyav_turns_it(videos):
    """The rotated video's squares are portrait pictures (the 320x180 picture stands 180 wide, 320 tall), and a
    decoder turning it the other way round would be far outside the tolerance."""
    path = videos["rotated_90"]
    reference = np.stack([rgb for _, rgb in iter_frames(path, fps=15, size=112, geometry="crop_and_pad")])
    decoded = np.stack([rgb for _, rgb in torchcodec_frames(path, fps=15, size=112, geometry="crop_and_pad")])
    columns = np.flatnonzero(reference.max(axis=(0, 1, 3)) > 0)  # black padding left and right of a portrait picture
    assert columns[0] > 0 and columns[-1] < 111
    assert np.abs(decoded.astype(int) - reference).mean() <= MAX_MEAN_LEVELS
    assert np.abs(np.rot90(decoded, 2, axes=(1, 2)).astype(int) - reference).mean() > 5 * MAX_MEAN_LEVELS


def test_chunks_give_the_same_frames_and_report_as_one_decode_and_as_pyav(videos):
    path = videos["vfr_160x120"]
    pyav_report, small, large = DecodeReport(), DecodeReport(), DecodeReport()
    reference = list(iter_frames(path, fps=15, size=112, report=pyav_report))
    in_threes = list(torchcodec_frames(path, fps=15, size=112, chunk_frames=3, report=small))
    whole = list(torchcodec_frames(path, fps=15, size=112, chunk_frames=1000, report=large))
    assert [time for time, _ in in_threes] == [time for time, _ in whole] == [time for time, _ in reference]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(in_threes, whole, strict=True))
    assert small == large == pyav_report and small.decoded_frames == len(VFR_TIMES) and not small.problems()


def test_area_weights_are_swscales_area_filter_shrinking_and_enlarging():
    """On grey noise (luma only: no colour conversion), PyAV's AREA resize and the weights agree to rounding (within
    two levels, fixed-point arithmetic)."""
    grey = np.random.default_rng(0).integers(0, 256, size=(180, 320), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(grey, format="gray")
    for width, height in [(149, 84), (112, 63), (200, 180), (480, 270), (1000, 500)]:
        expected = frame.reformat(width=width, height=height, format="gray", interpolation="AREA").to_ndarray()
        resized = area_weights(180, height, CPU) @ torch.from_numpy(grey).float() @ area_weights(320, width, CPU).T
        difference = np.abs(resized.round().clamp(0, 255).numpy() - expected)
        assert difference.mean() < 0.3 and difference.max() <= 2, (width, height)
    for source, target in [(320, 149), (48, 112), (112, 112)]:
        weights = area_weights(source, target, CPU)
        assert weights.shape == (target, source) and torch.allclose(weights.sum(dim=1), torch.ones(target))
    assert torch.equal(area_weights(5, 5, CPU), torch.eye(5))


def test_resizing_decoded_rgb_gives_what_swscale_gives_from_the_yuv_frame(videos):
    """PyAV's full-resolution RGB of a 4:2:0 frame (what torchcodec gives too), resized like swscale, against PyAV's
    resize of the YUV frame: chroma paired for even widths, per pixel (and dithered) for odd ones; and a plain resize
    of the RGB is much further off on this sharp, colourful frame."""
    with av.open(str(videos["640x480_30fps"])) as container:
        frame = next(container.decode(video=0))
    rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].float()
    for width, height in [(124, 93), (149, 112), (112, 84)]:
        expected = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
        resized = resize_like_swscale(rgb, height, width)[0].round().clamp(0, 255).permute(1, 2, 0).numpy()
        difference = np.abs(resized - expected)
        assert difference.mean() < 1.3 and np.percentile(difference, 99) <= 3, (width, height)
        plain = area_weights(480, height, CPU) @ rgb[0] @ area_weights(640, width, CPU).T
        assert np.abs(plain.round().clamp(0, 255).permute(1, 2, 0).numpy() - expected).mean() > difference.mean() + 0.5


def tiny_model_folder(folder: Path) -> Path:
    torch.manual_seed(0)
    GesturesForVideoClassification(get_config("tiny-videomae")).save_pretrained(folder)
    return folder


def one_video_manifest(folder: Path, video: Path) -> Path:
    """A manifest of one video, given by its absolute path (extract with --allow-outside-paths)."""
    path = folder / "manifest.csv"
    with path.open("w", newline="") as file:
        csv.writer(file).writerows([["video", "patient", "seizure", "label"], [str(video), "p1", "s1", "TCS"]])
    return path


def test_extraction_with_torchcodec_gives_pyavs_snippets_and_features(videos, tmp_path, capsys):
    manifest, model = one_video_manifest(tmp_path, videos["640x480_30fps"]), tiny_model_folder(tmp_path / "model")
    rows = {}
    for decoder in ("pyav", "torchcodec"):
        out = tmp_path / decoder
        assert main(["extract", "--manifest", str(manifest), "--model", str(model), "--out", str(out), "--quiet",
                     "--device", "cpu", "--precision", "fp32", "--decoder", decoder, "--allow-outside-paths"]) == 0
        rows[decoder] = datasets.load_dataset(str(out), split="train").with_format("numpy")[0]
    printed = capsys.readouterr().err
    assert "gestures extract: decoder pyav (asked for (--decoder pyav))" in printed
    assert "gestures extract: decoder torchcodec (asked for (--decoder torchcodec), decoding on cpu)" in printed
    pyav, torchcodec = rows["pyav"], rows["torchcodec"]
    np.testing.assert_array_equal(torchcodec["start_times"], pyav["start_times"])
    assert len(pyav["start_times"]) == 7  # 30 frames at 15 fps, 4-frame snippets
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(torchcodec["features"]),
                                                   torch.from_numpy(pyav["features"]), dim=1)
    assert cosine.min() >= 0.9999 and not np.array_equal(torchcodec["features"], pyav["features"])


def test_auto_decodes_with_pyav_on_a_cpu(videos):
    assert choose_decoder("auto", CPU, videos["vfr_160x120"]) == ("pyav", "no CUDA device: PyAV decodes on the CPU")
    assert choose_decoder("pyav", torch.device("cuda"), None) == ("pyav", "asked for (--decoder pyav)")
    assert choose_decoder("torchcodec", CPU, None) == (
        "torchcodec", "asked for (--decoder torchcodec), decoding on cpu")
    with pytest.raises(ValueError, match="decoder must be one of auto, pyav, torchcodec, got 'nvdec'"):
        choose_decoder("nvdec", CPU, None)


def test_without_torchcodec_auto_falls_back_to_pyav_and_an_explicit_request_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # `import torchcodec` fails as if it were not installed
    missing = "torchcodec is not installed (pip install 'gestures-hub[torchcodec]')"
    assert choose_decoder("auto", torch.device("cuda"), "v.mp4") == ("pyav", missing)
    with pytest.raises(ValueError) as error:
        choose_decoder("torchcodec", CPU, "v.mp4")
    assert str(error.value) == f"--decoder torchcodec cannot be used: {missing}. Or pass --decoder pyav."


def test_without_ffmpegs_libraries_auto_falls_back_to_pyav(monkeypatch):
    import torchcodec

    monkeypatch.setattr(torchcodec, "ffmpeg_major_version", None)
    name, why = choose_decoder("auto", torch.device("cuda"), "v.mp4")
    assert name == "pyav" and why.startswith("FFmpeg libraries for torchcodec are missing")
    assert "`apt-get install ffmpeg`" in why
    with pytest.raises(ValueError, match="cannot be used: FFmpeg libraries for torchcodec are missing"):
        choose_decoder("torchcodec", CPU, "v.mp4")


@pytest.mark.parametrize(("mean", "p99", "chosen"), [(3.2, 9.0, "pyav"), (0.4, 2.0, "torchcodec"),
                                                      (0.4, 25.0, "pyav")])
def test_on_cuda_auto_takes_torchcodec_only_when_its_frames_are_faithful(monkeypatch, mean, p99, chosen):
    checked = []

    def compare(path, **settings):
        checked.append((path, settings))
        return Faithfulness(str(path), 32, True, mean, p99, 40.0)

    monkeypatch.setattr(torchcodec_decode, "compare_decoders", compare)
    cuda = torch.device("cuda")
    name, why = choose_decoder("auto", cuda, "/videos/first.mp4", fps=15.0, size=112, geometry="crop_and_pad")
    numbers = (f"mean {mean:.2f}, 99th percentile {p99:.1f}, max 40 levels over 32 frames (tolerance: mean "
               f"{MAX_MEAN_LEVELS}, 99th percentile {MAX_P99_LEVELS})")
    if chosen == "pyav":
        assert (name, why) == ("pyav", f"torchcodec's frames differ from PyAV's on first.mp4: {numbers}")
    else:
        assert (name, why) == ("torchcodec", f"decoding on cuda; its frames match PyAV's on first.mp4: {numbers}")
    assert checked == [("/videos/first.mp4", {"fps": 15.0, "size": 112, "geometry": "crop_and_pad", "device": cuda})]
    checked.clear()
    assert choose_decoder("auto", cuda, "/videos/first.mp4", decode_workers=3) == (
        "pyav", "--decode-workers 3 asks for PyAV decoder processes")
    assert not checked


def test_frames_at_other_times_are_never_faithful():
    moved = Faithfulness("v.mp4", 32, False, 0.0, 0.0, 0.0)
    assert not moved.faithful and moved.describe() == "its first 32 frames come at other times than PyAV's"


@pytest.mark.parametrize("kind", ["missing", "text", "png", "audio", "truncated_mp4"])
def test_unusable_files_raise_a_video_error_naming_the_file(kind, tmp_path):
    path = make_bad(kind, tmp_path)
    with pytest.raises(VideoError) as error:
        next(torchcodec_frames(path, fps=15, size=112))
    assert error.value.path == str(path) and f"Cannot use video '{path}'" in str(error.value)


def test_a_file_torchcodec_cannot_open_raises_a_video_error_naming_it(videos, monkeypatch):
    import torchcodec.decoders

    def refuse(*args, **kwargs):
        raise RuntimeError("Could not open input file: Invalid data found when processing input\nmore")

    monkeypatch.setattr(torchcodec.decoders, "VideoDecoder", refuse)
    path = videos["vfr_160x120"]
    with pytest.raises(VideoError) as error:
        next(torchcodec_frames(path, fps=15, size=112))
    assert str(error.value) == (
        f"Cannot use video '{path}': torchcodec cannot open it (Could not open input file: Invalid data found when "
        "processing input). Decode it with PyAV (--decoder pyav), or re-encode it to H.264, e.g. "
        "`ffmpeg -i IN -c:v libx264 OUT.mp4`.")


def test_the_cli_offers_the_decoder_and_refuses_torchcodec_with_decoder_processes(videos, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["extract", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--decoder {auto,pyav,torchcodec}" in help_text
    assert "default: auto, torchcodec on a CUDA GPU if its frames of the first video match PyAV's" in help_text
    manifest = one_video_manifest(tmp_path, videos["vfr_160x120"])
    out = tmp_path / "out"
    assert main(["extract", "--manifest", str(manifest), "--model", "tiny-videomae", "--out", str(out),
                 "--decoder", "torchcodec", "--decode-workers", "2", "--quiet", "--allow-outside-paths"]) == 2
    assert ("error: --decoder torchcodec decodes in this process, but --decode-workers 2 asks for PyAV decoder "
            "processes: pass --decode-workers 0 with it, or --decoder pyav.") in capsys.readouterr().err
    assert not out.exists()
