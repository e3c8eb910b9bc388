"""Test session set-up: never touch the network, keep caches out of the user's home."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="gestures-hf-home-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
