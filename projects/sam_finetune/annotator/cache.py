"""Image embeddings on disk, so each image is encoded once, and the next image prepared in the background.

Key: <cache_dir>/<model fingerprint>/<image digest>.pt. The model fingerprint covers the checkpoint
file(s) and every preprocessing setting; the image digest is its file's bytes. Like the training
cache (one embedding per image while the encoder and the input pixels do not change), an entry is
valid exactly while those three stay the same: a fine-tuned checkpoint, another intensity window or
an edited image gets new entries. A few recent embeddings stay in memory too.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from projects.sam_finetune.annotator.model import AnnotationModel, Embedding, file_digest
from projects.sam_finetune.annotator.store import write_atomically

MEMORY_ENTRIES = 4  # current image, next one, and a step back


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "samkit" / "annotate_embeddings"


class EmbeddingStore:
    def __init__(self, model: AnnotationModel, cache_dir: str | Path):
        self.model = model
        self.folder = Path(cache_dir) / model.fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        self._memory: OrderedDict[str, Embedding] = OrderedDict()
        self._pending: dict[str, Future] = {}
        self._digests: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self.computed = 0  # encoder runs (for the page and the tests)
        self.read_from_disk = 0

    def _key(self, path: Path) -> str:
        """The digest of the image file, re-read only when its size or modification time changes."""
        stat = path.stat()
        stamp = (str(path), stat.st_mtime_ns, stat.st_size)
        if stamp not in self._digests:
            self._digests[stamp] = file_digest(path)
        return self._digests[stamp]

    def get(self, path: Path) -> tuple[Embedding, str]:
        """-> (embedding, where it came from: "memory" | "disk" | "computed"). Waits for a prefetch of it."""
        return self.submit(path).result()

    def prefetch(self, path: Path | None) -> None:
        if path is not None:
            self.submit(path)

    def submit(self, path: Path) -> Future:
        key = self._key(path)
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                done: Future = Future()
                done.set_result((self._memory[key], "memory"))
                return done
            if key not in self._pending:
                future = self._worker.submit(self._load_or_compute, key, path)
                self._pending[key] = future
            return self._pending[key]

    def _load_or_compute(self, key: str, path: Path) -> tuple[Embedding, str]:
        try:
            file = self.folder / f"{key}.pt"
            if file.is_file():
                stored = torch.load(file, map_location="cpu", weights_only=True)
                embedding = Embedding(features=stored["features"].to(self.model.device),
                                      original_size=tuple(stored["original_size"]),
                                      input_size=tuple(stored["input_size"]))
                source = "disk"
                self.read_from_disk += 1
            else:
                embedding = self.model.embed(path)
                buffer = io.BytesIO()
                torch.save({"features": embedding.features.cpu(), "original_size": list(embedding.original_size),
                            "input_size": list(embedding.input_size)}, buffer)
                write_atomically(file, buffer.getvalue())
                source = "computed"
                self.computed += 1
            with self._lock:
                self._memory[key] = embedding
                while len(self._memory) > MEMORY_ENTRIES:
                    self._memory.popitem(last=False)
            return embedding, source
        finally:
            with self._lock:
                self._pending.pop(key, None)

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
