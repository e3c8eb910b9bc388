"""``--weights URL#sha256=<hex>``: download once into the HF cache, verify, reuse; served from 127.0.0.1 only."""

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from torch import nn

from gestures_hub.importers import CheckpointError, weights_cache_dir
from gestures_hub.presets import load_model

PRESET = "gestures-blstm-features"  # BLSTM(64) over 512-d features: the tiny original GESTURES aggregator fits it


class RecordingHandler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # quiet: pytest shows failures, not requests
        pass


@dataclass
class Served:
    """A checkpoint on a local HTTP server: its URL (without hash), SHA-256 and tensors, and the requests seen."""

    url: str
    sha256: str
    state_dict: dict[str, torch.Tensor]
    httpd: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def requests(self) -> list[str]:
        return self.httpd.requests  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The weights cache under a fresh HF_HOME; online (conftest makes the session offline), short HTTP timeout."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 5)
    assert weights_cache_dir() == tmp_path / "hf-home" / "gestures-weights"
    return weights_cache_dir()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The original GESTURES BLSTM aggregator (``lstm.*``, ``fc.*``, 1.2 MB) served on a free port of 127.0.0.1."""
    folder = tmp_path / "served"
    folder.mkdir()
    torch.manual_seed(0)
    original = nn.ModuleDict({"lstm": nn.LSTM(512, 64, batch_first=True, bidirectional=True), "fc": nn.Linear(128, 2)})
    torch.save(original.state_dict(), folder / "blstm.pth")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RecordingHandler, directory=str(folder)))
    httpd.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    sha256 = hashlib.sha256((folder / "blstm.pth").read_bytes()).hexdigest()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/blstm.pth"
    server = Served(url, sha256, original.state_dict(), httpd, thread)
    yield server
    server.stop()


def assert_loaded(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    rnn = model.gestures.aggregator.rnn
    torch.testing.assert_close(rnn.weight_ih_l0_reverse, state_dict["lstm.weight_ih_l0_reverse"], rtol=0, atol=0)
    torch.testing.assert_close(model.classifier.weight, state_dict["fc.weight"], rtol=0, atol=0)


def test_url_with_good_hash_loads_the_checkpoint(cache, served):
    model, pretrained = load_model(PRESET, weights=f"{served.url}#sha256={served.sha256.upper()}")
    assert pretrained
    assert_loaded(model, served.state_dict)
    assert [path.name for path in cache.iterdir()] == [f"{served.sha256[:16]}-blstm.pth"]


def test_second_call_uses_the_cache_without_network(cache, served):
    url = f"{served.url}#sha256={served.sha256}"
    load_model(PRESET, weights=url)
    served.stop()
    model, _ = load_model(PRESET, weights=url)
    assert_loaded(model, served.state_dict)
    assert served.requests == ["/blstm.pth"]


def test_cached_file_that_no_longer_matches_is_downloaded_again(cache, served):
    url = f"{served.url}#sha256={served.sha256}"
    load_model(PRESET, weights=url)
    (cached,) = cache.iterdir()
    cached.write_bytes(b"corrupted")
    model, _ = load_model(PRESET, weights=url)
    assert_loaded(model, served.state_dict)
    assert served.requests == ["/blstm.pth"] * 2
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == served.sha256


def test_bad_hash_deletes_the_download(cache, served):
    url = f"{served.url}#sha256={'0' * 64}"
    with pytest.raises(CheckpointError) as caught:
        load_model(PRESET, weights=url)
    assert str(caught.value).startswith(f"{url}: SHA-256 mismatch, expected {'0' * 64} but the download has "
                                        f"{served.sha256}; it was deleted.")
    assert served.requests == ["/blstm.pth"]
    assert list(cache.iterdir()) == []  # neither the file nor its temporary


@pytest.mark.parametrize("failure", ["server down", "HTTP 404"])
def test_unreachable_weights_name_the_url_and_leave_nothing(failure, cache, served):
    if failure == "server down":
        served.stop()  # the port is closed now: connection refused (huggingface_hub retries it for ~5 s)
    url = f"{served.url}{'.missing' if failure == 'HTTP 404' else ''}#sha256={served.sha256}"
    with pytest.raises(CheckpointError, match="download failed") as caught:
        load_model(PRESET, weights=url)
    message = str(caught.value)
    assert message.startswith(f"{url}: download failed (")
    reason = message.removeprefix(url)  # the URL itself can hold "404": the random port or the SHA-256
    assert ("404" in reason) == (failure == "HTTP 404")
    assert message.endswith("Check the URL and the network, or download the file yourself and pass its local path.")
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("fragment", ["", "#sha256=abc123", "#md5=0123456789abcdef0123456789abcdef"])
def test_url_without_a_sha256_is_refused(fragment, cache, served):
    with pytest.raises(CheckpointError, match=r"needs the file's published SHA-256, written as "
                                              r"URL#sha256=<64 hex digits> \(compute a file's with `sha256sum FILE`\)"):
        load_model(PRESET, weights=served.url + fragment)
    assert served.requests == []


def test_offline_mode_refuses_a_download_that_is_not_cached(cache, served, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match=r"no verified copy in the weights cache .* offline mode is on "
                                              r"\(HF_HUB_OFFLINE=1\)\. Unset HF_HUB_OFFLINE to download it once"):
        load_model(PRESET, weights=f"{served.url}#sha256={served.sha256}")
    assert served.requests == []
    assert not cache.exists()


def test_cache_folder_follows_hf_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "shared" / "hub"))
    assert weights_cache_dir() == tmp_path / "shared" / "gestures-weights"
