"""What the annotation-page tests share: a tiny model, generated images, a session, a live server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor

from projects.sam_finetune.annotate import build_session, parse_args
from projects.sam_finetune.annotator.server import Session, create_app
from projects.sam_finetune.modeling.build import build_sam_tiny
from projects.sam_finetune.preprocess import map_intensity, normalization_mean_std, read_image
from projects.sam_finetune.synthetic import make_coco_dataset

IMAGE_SIZE = 64


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random-init tiny SAM saved like Meta's checkpoints (a bare state dict)."""
    torch.manual_seed(seed)
    torch.save(build_sam_tiny(image_size=IMAGE_SIZE).state_dict(), path)
    return path


def generated_images(root: Path, count: int = 4, seed: int = 0) -> Path:
    """COCO layout (root/train/*.png + root/annotations/instances_train.json with the true objects)."""
    return make_coco_dataset(root, {"train": count}, image_size=IMAGE_SIZE, seed=seed)


def session_for(images: Path, checkpoint: Path, annotations: Path, *extra: str) -> Session:
    argv = ["--images", str(images), "--checkpoint", str(checkpoint), "--annotations", str(annotations),
            "--cache_dir", str(annotations.parent / "embedding_cache"), "--device", "cpu", *extra]
    if "--model_type" not in extra and not _is_training_payload(checkpoint):
        argv += ["--model_type", "tiny"]
    return build_session(parse_args(argv))


def _is_training_payload(checkpoint: Path) -> bool:
    payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return isinstance(payload, dict) and ("config" in payload or "extra" in payload)


def reference_predictor(session: Session, image_path: Path) -> SamPredictor:
    """segment-anything's own SamPredictor on the session's model, given the picture the model sees."""
    sam = session.model.sam
    mean, std = normalization_mean_std(session.model.preprocessing.normalization)
    sam.pixel_mean.copy_(torch.tensor(mean).view(-1, 1, 1))
    sam.pixel_std.copy_(torch.tensor(std).view(-1, 1, 1))
    predictor = SamPredictor(sam)
    predictor.set_image(map_intensity(read_image(image_path), session.model.preprocessing.intensity))
    return predictor


def decode_runs(runs: list[int], shape: tuple[int, int]) -> np.ndarray:
    """The page's row-major run lengths (background first) -> (H, W) bool."""
    values = np.zeros(len(runs), bool)
    values[1::2] = True
    return np.repeat(values, runs).reshape(shape)


@contextlib.contextmanager
def live_server(session: Session) -> Iterator[str]:
    """uvicorn serving the session's app on a free local port, in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(session), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        session.embeddings.close()
