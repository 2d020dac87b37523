"""The loop the page exists for: annotate generated images through the API, train sam_finetune on the saved
file as it is (one epoch, through train.py's entry), and load the result back into the annotator, for each
strategy: the training checkpoint and its Meta-format export (+ adapter weights) give the same masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pycocotools.coco import COCO

from projects.sam_finetune.annotator.model import load_annotation_model
from projects.sam_finetune.annotator.server import create_app
from projects.sam_finetune.synthetic import make_coco_dataset
from projects.sam_finetune.train import cli as train_cli
from shared.checkpoint import CheckpointError
from tests.sam_finetune.annotate_support import (
    IMAGE_SIZE,
    decode_runs,
    reference_predictor,
    session_for,
    tiny_checkpoint,
)
from tests.sam_finetune.helpers import tiny_config, write_config


@pytest.fixture(scope="module")
def annotated(tmp_path_factory) -> tuple[Path, Path, dict[str, int]]:
    """(data root in the COCO layout with our annotation files, base checkpoint, objects saved per split)."""
    root = make_coco_dataset(tmp_path_factory.mktemp("loop"), {"train": 4, "val": 2}, image_size=IMAGE_SIZE, seed=7)
    base = tiny_checkpoint(root.parent / "base.pth", seed=1)
    saved = {}
    for split in ("train", "val"):
        truth_file = root / "annotations" / f"instances_{split}.json"
        truth = COCO(str(truth_file.rename(root / f"truth_{split}.json")))
        session = session_for(root / split, base, truth_file, "--categories", "target")
        client = TestClient(create_app(session))
        saved[split] = 0
        for ann in truth.loadAnns(truth.getAnnIds(catIds=[1], iscrowd=False)):
            name = truth.imgs[ann["image_id"]]["file_name"]
            x, y, w, h = ann["bbox"]
            revision = client.post("/api/open", json={"name": name}).json()["revision"]
            prompt = {"name": name, "box": [x, y, x + w - 1, y + h - 1]}
            if not client.post("/api/predict", json=prompt).json()["candidates"][0]["area"]:
                continue
            response = client.post("/api/objects", json={**prompt, "revision": revision, "candidate": 0,
                                                         "category_id": 1})
            assert response.status_code == 200, response.text
            saved[split] += 1
        session.embeddings.close()
    assert saved["train"] >= 3 and saved["val"] >= 1
    return root, base, saved


@pytest.mark.parametrize("strategy", ["full", "adapter", "lora"])
def test_annotate_train_and_annotate_again(annotated, strategy, tmp_path):
    root, base, saved = annotated
    before = (root / "annotations" / "instances_train.json").read_bytes()
    config = tiny_config(root, tmp_path / "runs", base, data={"dataset_type": "coco", "batch_size": 2},
                         finetuning={"strategy": strategy, "adapter": {"bottleneck_dim": 8}},
                         model={"freeze_image_encoder": strategy != "full"})
    assert train_cli(["--config", str(write_config(tmp_path / "config.yaml", config)), "--device", "cpu"]) == 0
    assert (root / "annotations" / "instances_train.json").read_bytes() == before  # read as it is
    (run_dir,) = {path.parent for path in (tmp_path / "runs").rglob("best_model.pth")}
    summary = json.loads(next(run_dir.glob("training_summary_*.json")).read_text())
    assert summary.get("skipped_train_samples", 0) == 0

    # back into the annotator: the training checkpoint, and the Meta-format export (+ adapter file)
    export_flags = ["--model_type", "tiny"] + (["--strategy_weights", str(run_dir / "best_model_adapter.pth")]
                                               if strategy == "adapter" else [])
    name = "img_0001.png"
    prompt = {"name": name, "points": [[20, 30]], "labels": [1], "box": [5, 8, 40, 50]}
    shown = []
    for checkpoint, flags in ((run_dir / "best_model.pth", []), (run_dir / "best_model_sam.pth", export_flags)):
        session = session_for(root / "train", checkpoint, tmp_path / f"again_{checkpoint.stem}.json", *flags)
        client = TestClient(create_app(session))
        assert session.model.description["strategy"] == (strategy if not flags or strategy == "adapter" else "stock")
        opened = client.post("/api/open", json={"name": name}).json()
        assert opened["embedding"]["source"] == "computed"  # a new model: none of the base model's embeddings
        candidates = client.post("/api/predict", json=prompt).json()["candidates"]
        masks = np.stack([decode_runs(c["runs"], (opened["height"], opened["width"])) for c in candidates])
        expected, _, _ = reference_predictor(session, root / "train" / name).predict(
            point_coords=np.asarray(prompt["points"], np.float32), point_labels=np.asarray([1]),
            box=np.asarray(prompt["box"], np.float32), multimask_output=False)
        np.testing.assert_array_equal(masks[0], expected[0])
        shown.append(masks)
        session.embeddings.close()
    np.testing.assert_array_equal(shown[0], shown[1])
    with pytest.raises(CheckpointError, match="would not match"):  # the run's own normalisation wins, loudly
        load_annotation_model(run_dir / "best_model.pth", normalization="zero_one")
    if strategy != "full":  # strategy weights go only with an adapter export, never with a training checkpoint
        with pytest.raises(CheckpointError, match="merged|holds its adapter"):
            load_annotation_model(run_dir / ("best_model_sam.pth" if strategy == "lora" else "best_model.pth"),
                                  "tiny", strategy_weights=run_dir / f"best_model_{strategy}.pth")
