"""Bench rows of the annotation page: what a click costs once the image embedding is cached, against
the embedding itself, measured in the same process on the same image.

    flock /tmp/bigmem.lock python -m projects.sam_finetune.annotator.bench            # vit_b, CPU
    python -m projects.sam_finetune.annotator.bench --model_type tiny                 # seconds

vit_b is built with random weights (no download): the time of a forward pass does not depend on the
weight values. The image is a generated 1024x768 scene (resized to 1024x768 inside the 1024 square).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import cv2
import numpy as np
import torch

from projects.sam_finetune.annotator.cache import EmbeddingStore
from projects.sam_finetune.annotator.images import ImageFolder
from projects.sam_finetune.annotator.model import AnnotationModel, Prompts
from projects.sam_finetune.annotator.store import CocoStore
from projects.sam_finetune.modeling.build import build_sam
from projects.sam_finetune.preprocess import Preprocessing
from projects.sam_finetune.synthetic import draw_scene
from shared.memory import cpu_threads


def _median_seconds(run, repeats: int, device: torch.device = torch.device("cpu")) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def run_bench(model_type: str = "vit_b", threads: int = 2, clicks: int = 20, device: str = "cpu",
              http: bool = True) -> list[dict]:
    """`http=False` leaves out the row through the FastAPI app (for a machine without the web packages)."""
    image_size = 1024 if model_type != "tiny" else 64
    height, width = (768, 1024) if model_type != "tiny" else (48, 64)
    torch.manual_seed(0)
    sam = build_sam(model_type, None, image_size=image_size).eval().to(device)
    model = AnnotationModel(sam=sam, preprocessing=Preprocessing(image_size=image_size),
                            description={"model_type": model_type, "strategy": "stock", "checkpoint": "random"},
                            fingerprint=f"bench-{model_type}")
    with TemporaryDirectory() as tmp, cpu_threads(threads):
        folder = Path(tmp) / "images"
        folder.mkdir()
        image, targets, _ = draw_scene(np.random.default_rng(0), height, width, 3, 2)
        cv2.imwrite(str(folder / "scene.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        ys, xs = np.nonzero(targets[0])
        click = Prompts(points=[(float(xs.mean()), float(ys.mean()))], labels=[1])
        path = folder / "scene.png"

        model.embed(path)  # warm-up (allocator, kernels)
        on = torch.device(device)
        embed_seconds = _median_seconds(lambda: model.embed(path), 3 if model_type == "tiny" else 2, on)
        embedding = model.embed(path)
        model.predict(embedding, click)
        click_seconds = _median_seconds(lambda: model.predict(embedding, click), clicks, on)

        images = ImageFolder(folder)
        store = EmbeddingStore(model, Path(tmp) / "cache")
        store.get(path)  # computed and written to disk
        disk_seconds = _median_seconds(lambda: EmbeddingStore(model, Path(tmp) / "cache").get(path), 3, on)
        http_seconds = _http_click_seconds(model, images, store, click, clicks, Path(tmp)) if http else None
        store.close()

    where = f"{model_type}, {'CPU' if device == 'cpu' else device}, {threads} CPU threads, {width}x{height} image"
    rows = [
        {"name": f"annotate_{model_type}_embedding_seconds", "value": embed_seconds, "unit": "s",
         "note": f"baseline: preprocessing + image encoder, once per image ({where})"},
        {"name": f"annotate_{model_type}_click_to_mask_ms", "value": 1000 * click_seconds, "unit": "ms",
         "note": f"prompt encoder + mask decoder + upscaling on the cached embedding: "
                 f"the embedding costs {embed_seconds / click_seconds:.3g}x this"},
        {"name": f"annotate_{model_type}_embedding_from_disk_ms", "value": 1000 * disk_seconds, "unit": "ms",
         "note": f"a restarted server reading the cached embedding: computing it costs "
                 f"{embed_seconds / disk_seconds:.3g}x this"},
    ]
    if http_seconds is not None:
        rows.insert(2, {"name": f"annotate_{model_type}_click_over_http_ms", "value": 1000 * http_seconds, "unit": "ms",
                        "note": f"POST /api/predict in-process (4 masks run-length encoded to JSON): "
                                f"the embedding costs {embed_seconds / http_seconds:.3g}x this"})
    if device != "cpu":
        for row in rows:
            row["name"] += f"_{torch.device(device).type}"
    return rows


def _http_click_seconds(model: AnnotationModel, images: ImageFolder, store: EmbeddingStore, click: Prompts,
                        clicks: int, folder: Path) -> float:
    from fastapi.testclient import TestClient

    from projects.sam_finetune.annotator.server import Session, create_app

    session = Session(images=images, model=model, store=CocoStore(folder / "a.json", images), embeddings=store)
    client = TestClient(create_app(session))
    request = {"name": "scene.png", "points": [list(click.points[0])], "labels": [1]}
    client.post("/api/predict", json=request)
    return _median_seconds(lambda: client.post("/api/predict", json=request).raise_for_status(), clicks)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Click -> mask and embedding times of the annotation page.")
    parser.add_argument("--model_type", choices=["vit_b", "vit_l", "vit_h", "tiny"], default="vit_b")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (the bench) or cuda")
    parser.add_argument("--no_http", action="store_true", help="leave out the row through the FastAPI app")
    args = parser.parse_args()
    for row in run_bench(args.model_type, args.threads, device=args.device, http=not args.no_http):
        print(f"{row['name']:42s} {row['value']:>10,.3f} {row['unit']:3s} {row['note']}")
