"""Regenerate the screenshot of the annotation page in projects/sam_finetune/ANNOTATE.md:

    python -m tests.browser.make_screenshot [--out projects/sam_finetune/docs/annotate.png]

Trains the tiny SAM (box prompts, a few minutes on a CPU) on generated scenes, annotates two objects through
the API, then in headless Chromium draws a box around a third one, and saves the page.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import cv2
from fastapi.testclient import TestClient
from pycocotools.coco import COCO

from projects.sam_finetune.annotator.server import create_app
from projects.sam_finetune.synthetic import make_coco_dataset
from projects.sam_finetune.train import cli as train_cli
from shared.memory import cpu_threads
from tests.browser.chromium import chromium, drag, page_idle, wait_until
from tests.sam_finetune.annotate_support import live_server, session_for, tiny_checkpoint
from tests.sam_finetune.helpers import tiny_config, write_config

MIN_OBJECT_SIDE = 40  # pixels of the 320 px scenes
OUT = Path(__file__).resolve().parents[2] / "projects" / "sam_finetune" / "docs" / "annotate.png"


def trained_checkpoint(work: Path) -> Path:
    data = make_coco_dataset(work / "train_data", {"train": 64, "val": 8}, image_size=64, seed=11)
    config = tiny_config(data, work / "runs", tiny_checkpoint(work / "base.pth"),
                         data={"dataset_type": "coco", "category_ids": [1], "prompt_mode": "box", "batch_size": 4},
                         training={"num_epochs": 40, "learning_rate": 3e-3})
    with cpu_threads(1):
        assert train_cli(["--config", str(write_config(work / "config.yaml", config)), "--device", "cpu"]) == 0
    return next((work / "runs").rglob("best_model.pth"))


def box_around(mask, margin: int = 2) -> list[int]:
    x, y, w, h = cv2.boundingRect(mask)
    height, width = mask.shape
    return [max(x - margin, 0), max(y - margin, 0), min(x + w - 1 + margin, width - 1), min(y + h - 1 + margin, height - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a trained checkpoint (skips the training)")
    parser.add_argument("--keep", type=Path, default=None, help="copy the trained checkpoint here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = args.checkpoint or trained_checkpoint(work)
        if args.keep:
            shutil.copy(checkpoint, args.keep)
        images = make_coco_dataset(work / "to_annotate", {"train": 8}, image_size=320, seed=12)
        truth = COCO(str(images / "annotations" / "instances_train.json"))
        session = session_for(images / "train", checkpoint, work / "annotations.json", "--categories",
                              "cell,debris")
        client = TestClient(create_app(session))

        def large_targets(image_id: int) -> list:  # a model trained at 64 px misses objects of a few pixels there
            anns = truth.loadAnns(truth.getAnnIds(imgIds=[image_id], catIds=[1], iscrowd=False))
            return [truth.annToMask(a) for a in anns if min(a["bbox"][2:]) >= MIN_OBJECT_SIDE]

        image_id = max(truth.getImgIds(), key=lambda i: len(large_targets(i)))
        name, targets = truth.imgs[image_id]["file_name"], large_targets(image_id)
        for i, mask in enumerate(targets[:-1]):
            revision = client.post("/api/open", json={"name": name}).json()["revision"]
            client.post("/api/objects", json={"name": name, "revision": revision, "candidate": 0,
                                              "category_id": 1 + i % 2, "box": box_around(mask)}).raise_for_status()
        with live_server(session) as url, chromium() as driver:
            driver.get(url + "/")
            wait_until(lambda: page_idle(driver) and driver.execute_script(
                "return window.annotator.state.name") == name, "the page")
            x0, y0, x1, y1 = box_around(targets[-1])
            corner = "return window.annotator.imageToClient(arguments[0], arguments[1])"
            start, end = driver.execute_script(corner, x0, y0), driver.execute_script(corner, x1, y1)
            drag(driver, (start["x"], start["y"]), (end["x"], end["y"]))
            wait_until(lambda: page_idle(driver) and driver.execute_script(
                "return window.annotator.state.candidates.length === 4"), "the mask")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
