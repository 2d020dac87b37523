"""The annotation page's API through FastAPI's test client: masks equal SamPredictor's (and predict.py's),
saves round-trip through the tool's COCO loader, paths stay in the images folder, saves are atomic
and versioned, the embedding cache is on disk and keyed by the model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from pycocotools.coco import COCO

from projects.sam_finetune.annotate import cli
from projects.sam_finetune.annotator.server import create_app
from projects.sam_finetune.annotator.store import CocoStore, NewObject, VersionConflict
from projects.sam_finetune.data_sources import index_coco
from projects.sam_finetune.predict import make_predictor, predict_image
from projects.sam_finetune.preprocess import read_image
from projects.sam_finetune.synthetic import make_coco_dataset
from tests.sam_finetune.annotate_support import (
    decode_runs,
    generated_images,
    reference_predictor,
    session_for,
    tiny_checkpoint,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny_sam.pth", seed=3)


@pytest.fixture()
def dataset(tmp_path) -> Path:
    """root/train/*.png with its generated annotation file moved aside (root/truth.json)."""
    root = generated_images(tmp_path / "data", count=4)
    (root / "annotations" / "instances_train.json").rename(root / "truth.json")
    return root


def client_for(root: Path, checkpoint: Path, *extra: str):
    session = session_for(root / "train", checkpoint, root / "annotations" / "instances_train.json", *extra)
    return session, TestClient(create_app(session))


def true_objects(root: Path) -> list[tuple[str, list[float], np.ndarray]]:
    """(image name, box x0 y0 x1 y1, mask) of every generated target."""
    coco = COCO(str(root / "truth.json"))
    found = []
    for ann in coco.loadAnns(coco.getAnnIds(catIds=[1], iscrowd=False)):
        x, y, w, h = ann["bbox"]
        found.append((coco.imgs[ann["image_id"]]["file_name"], [x, y, x + w - 1, y + h - 1], coco.annToMask(ann)))
    return found


PROMPTS = [
    {"points": [[20, 14]], "labels": [1]},
    {"points": [[20, 14], [5, 5], [40, 30]], "labels": [1, 0, 1]},
    {"box": [8, 6, 40, 30]},
    {"box": [8, 6, 40, 30], "points": [[20, 14]], "labels": [0]},
]


@pytest.mark.parametrize("image_size", [96, 40])  # the model's input is 64: down- and up-scaling
def test_prompt_masks_equal_sam_predictor_and_predict_py(tmp_path, checkpoint, image_size):
    root = make_coco_dataset(tmp_path / "data", {"train": 2}, image_size=image_size, seed=1)
    session, client = client_for(root, checkpoint)
    name = "img_0001.png"  # portrait
    image_path = root / "train" / name
    reference = reference_predictor(session, image_path)
    official, preprocessing, _ = make_predictor(checkpoint, "tiny", "sam", session.model.device)
    height, width = read_image(image_path).shape[:2]
    assert client.post("/api/open", json={"name": name}).json()["height"] == height
    for prompt in PROMPTS:
        prompt = {k: (np.asarray(v) * image_size / 64).tolist() if k != "labels" else v for k, v in prompt.items()}
        response = client.post("/api/predict", json={"name": name, **prompt})
        assert response.status_code == 200, response.text
        candidates = response.json()["candidates"]
        shown = np.stack([decode_runs(c["runs"], (height, width)) for c in candidates])
        arrays = {"point_coords": np.asarray(prompt["points"], np.float32) if "points" in prompt else None,
                  "point_labels": np.asarray(prompt["labels"]) if "labels" in prompt else None,
                  "box": np.asarray(prompt["box"], np.float32) if "box" in prompt else None}
        single, single_iou, single_logits = reference.predict(**arrays, multimask_output=False)
        multi, multi_iou, multi_logits = reference.predict(**arrays, multimask_output=True)
        ours = session.model.predict(session.embeddings.get(image_path)[0], _prompts(prompt))
        np.testing.assert_allclose(ours.low_res_logits, np.concatenate([single_logits, multi_logits]), atol=1e-4)
        np.testing.assert_allclose([c["iou"] for c in candidates], np.concatenate([single_iou, multi_iou]), atol=1e-5)
        np.testing.assert_array_equal(shown, np.concatenate([single, multi]))
        if "box" in prompt or len(prompt["points"]) == 1:  # predict.py: one box, or points as one prompt
            as_cli = {"boxes": [prompt["box"]] if "box" in prompt else [], "points": prompt.get("points", []),
                      "point_labels": prompt.get("labels", [])}
            expected = predict_image(official, read_image(image_path), as_cli, preprocessing)
            np.testing.assert_array_equal(shown[0], expected[0])


def _prompts(prompt: dict):
    from projects.sam_finetune.annotator.model import Prompts

    return Prompts(points=[tuple(p) for p in prompt.get("points", [])], labels=prompt.get("labels", []),
                   box=tuple(prompt["box"]) if "box" in prompt else None)


def test_a_16_bit_image_is_shown_and_segmented_as_the_model_sees_it(dataset, checkpoint):
    gray = cv2.cvtColor(cv2.imread(str(dataset / "train" / "img_0000.png")), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(dataset / "train" / "deep.png"), gray.astype(np.uint16) * 16 + 100)  # 12-bit range
    session, client = client_for(dataset, checkpoint)
    shown = cv2.imdecode(np.frombuffer(client.get("/api/pixels", params={"name": "deep.png"}).content, np.uint8),
                         cv2.IMREAD_UNCHANGED)
    seen = session.model.display_image(dataset / "train" / "deep.png")
    np.testing.assert_array_equal(shown[:, :, ::-1], seen)
    assert seen.dtype == np.uint8 and seen.max() == 255 and seen.min() == 0  # the window, not a shift to 8 bits
    candidates = client.post("/api/predict", json={"name": "deep.png", "box": [8, 6, 40, 30]}).json()["candidates"]
    expected, _, _ = reference_predictor(session, dataset / "train" / "deep.png").predict(
        box=np.asarray([8, 6, 40, 30], np.float32), multimask_output=False)
    np.testing.assert_array_equal(decode_runs(candidates[0]["runs"], gray.shape), expected[0])


def accept(client, name: str, revision: int, **prompt) -> dict:
    response = client.post("/api/objects", json={"name": name, "revision": revision, "candidate": 0,
                                                 "category_id": 1, **prompt})
    assert response.status_code == 200, response.text
    return response.json()


def test_saved_file_round_trips_through_the_training_loader(dataset, checkpoint):
    session, client = client_for(dataset, checkpoint, "--categories", "cell,nucleus")
    saved_masks = {}
    for name, box, _ in true_objects(dataset)[:3]:
        revision = client.post("/api/open", json={"name": name}).json()["revision"]
        predicted = client.post("/api/predict", json={"name": name, "box": box}).json()["candidates"][0]
        if not predicted["area"]:
            continue
        result = accept(client, name, revision, box=box)
        height, width = read_image(dataset / "train" / name).shape[:2]
        saved_masks[result["saved"]] = (name, decode_runs(predicted["runs"], (height, width)))
    assert len(saved_masks) >= 2

    annotation_file = dataset / "annotations" / "instances_train.json"
    coco = COCO(str(annotation_file))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cell", "nucleus"]
    for ann_id, (name, mask) in saved_masks.items():
        ann = coco.anns[ann_id]
        assert coco.imgs[ann["image_id"]]["file_name"] == name
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
    index = index_coco(dataset, "train", [])  # sam_finetune's own loader, unchanged
    assert sum(len(r.annotations) for r in index.records) == len(saved_masks) and not index.skipped

    reopened, client2 = client_for(dataset, checkpoint)  # a new server on the same file resumes
    state = client2.get("/api/state").json()
    last_name = list(saved_masks.values())[-1][0]
    assert state["resume"] == last_name
    assert sum(image["objects"] for image in state["images"]) == len(saved_masks)
    objects = client2.get("/api/objects", params={"name": last_name}).json()["objects"]
    height, width = read_image(dataset / "train" / last_name).shape[:2]
    np.testing.assert_array_equal(decode_runs(objects[-1]["runs"], (height, width)), list(saved_masks.values())[-1][1])


def test_paths_outside_the_images_folder_are_refused(dataset, checkpoint, tmp_path):
    secret = tmp_path / "secret.png"
    cv2.imwrite(str(secret), np.full((8, 8, 3), 255, np.uint8))
    os.symlink(secret, dataset / "train" / "link.png")  # a link out of the folder is not an image of it
    (dataset / "train" / "sub").mkdir()
    shutil.copy(dataset / "train" / "img_0000.png", dataset / "train" / "sub" / "deep.png")
    session, client = client_for(dataset, checkpoint)
    assert "link.png" not in session.images.names and "sub/deep.png" in session.images.names
    attempts = ["../secret.png", "/etc/passwd", str(secret), "sub/../img_0000.png", "./img_0000.png",
                "..\\secret.png", "link.png", "img_0000.png\x00.png", "../../../../etc/passwd", ""]
    for name in attempts:
        for response in (client.get("/api/pixels", params={"name": name}),
                         client.post("/api/open", json={"name": name}),
                         client.post("/api/predict", json={"name": name, "points": [[1, 1]], "labels": [1]}),
                         client.post("/api/objects", json={"name": name, "revision": 0, "candidate": 0,
                                                           "category_id": 1, "points": [[1, 1]], "labels": [1]})):
            assert response.status_code == 400, (name, response.status_code, response.text)
    assert client.get("/api/pixels", params={"name": "sub/deep.png"}).status_code == 200
    assert client.get("/api/pixels?name=..%2Fsecret.png").status_code == 400
    too_big = {"name": "img_0000.png", "points": [[1, 1]] * 20000, "labels": [1] * 20000}
    assert client.post("/api/predict", json=too_big).status_code == 413
    streamed = (b" " * 1000 for _ in range(100))  # no Content-Length: counted as it arrives
    assert client.post("/api/predict", content=streamed, headers={"content-type": "application/json"}).status_code == 413
    assert client.post("/api/predict", json={"name": "img_0000.png", "points": [[1, 1]] * 65,
                                             "labels": [1] * 65}).status_code == 422
    assert not (dataset / "train" / "link.png").resolve().is_relative_to(session.images.root)


def test_an_unreadable_image_is_reported_and_the_others_still_work(dataset, checkpoint):
    (dataset / "train" / "img_0002.png").write_bytes(b"not a png")
    session, client = client_for(dataset, checkpoint)
    for response in (client.post("/api/open", json={"name": "img_0002.png"}),
                     client.get("/api/pixels", params={"name": "img_0002.png"})):
        assert response.status_code == 422 and "img_0002.png: unreadable image" in response.json()["detail"]
    assert client.post("/api/open", json={"name": "img_0001.png"}).status_code == 200


def test_two_tabs_cannot_overwrite_each_others_objects(dataset, checkpoint):
    session, client = client_for(dataset, checkpoint)
    name = "img_0000.png"
    tab_a = client.post("/api/open", json={"name": name}).json()["revision"]
    tab_b = client.post("/api/open", json={"name": name}).json()["revision"]
    box_a, box_b = [4, 4, 30, 30], [30, 10, 60, 40]
    first = accept(client, name, tab_a, box=box_a)
    stale = client.post("/api/objects", json={"name": name, "revision": tab_b, "candidate": 0, "category_id": 1,
                                              "box": box_b})
    assert stale.status_code == 409 and "changed elsewhere" in stale.json()["detail"]
    deleted = client.post("/api/objects/delete", json={"name": name, "revision": tab_b, "id": first["saved"]})
    assert deleted.status_code == 409  # tab B cannot delete what it has not seen
    tab_b = client.get("/api/objects", params={"name": name}).json()["revision"]  # the page reloads
    second = accept(client, name, tab_b, box=box_b)
    ids = [ann["id"] for ann in json.loads((dataset / "annotations" / "instances_train.json").read_text())["annotations"]]
    assert ids == [first["saved"], second["saved"]]

    # another server process on the same file: it re-reads the file and keeps both sets of objects
    other = CocoStore(session.store.path, session.images)
    mask = np.zeros((48, 64), bool)
    mask[2:5, 2:5] = True
    with pytest.raises(VersionConflict):
        other.add_object("img_0000.png", 0, NewObject(mask, 1, {}), (48, 64))
    other.add_object("img_0000.png", 2, NewObject(mask, 1, {}), (48, 64))
    assert len(session.store.objects("img_0000.png")) == 3


def killed_while_saving(store: CocoStore) -> None:
    """Save in a forked child and SIGKILL it once the new file is written but not yet renamed over the old."""
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a server process about to be killed
        try:
            os.fsync = lambda _fd: (os.write(ready_write, b"w"), time.sleep(60))
            mask = np.zeros((48, 64), bool)
            mask[10:20, 10:20] = True
            store.add_object("img_0000.png", store.revision("img_0000.png"), NewObject(mask, 1, {}), (48, 64))
        finally:
            os._exit(0)
    os.close(ready_write)
    assert os.read(ready_read, 1) == b"w"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(ready_read)


def test_a_kill_while_saving_leaves_the_previous_file(dataset, checkpoint):
    session, client = client_for(dataset, checkpoint)
    accept(client, "img_0000.png", 0, box=[4, 4, 30, 30])
    annotation_file = session.store.path
    before = annotation_file.read_bytes()
    killed_while_saving(CocoStore(annotation_file, session.images))
    assert annotation_file.read_bytes() == before  # the previous, complete file
    assert len(COCO(str(annotation_file)).anns) == 1
    assert list(annotation_file.parent.glob(".instances_train.json.*.tmp"))  # the dead writer's temp file

    # in-process: a failing write changes neither the file nor the server's state
    original = os.replace
    try:
        os.replace = lambda *_: (_ for _ in ()).throw(OSError("disk full"))
        with pytest.raises(OSError):
            session.store.add_object("img_0000.png", 1, NewObject(np.ones((48, 64), bool), 1, {}), (48, 64))
    finally:
        os.replace = original
    assert annotation_file.read_bytes() == before and session.store.revision("img_0000.png") == 1
    accept(client, "img_0000.png", 1, box=[30, 10, 60, 40])  # and saving goes on
    assert len(COCO(str(annotation_file)).anns) == 2


def test_embeddings_cached_on_disk_per_model_and_next_image_prefetched(dataset, checkpoint, tmp_path):
    session, client = client_for(dataset, checkpoint)
    assert client.post("/api/open", json={"name": "img_0000.png"}).json()["embedding"]["source"] == "computed"
    # the next image was submitted in the background: opening it waits for that run, no second one
    assert client.post("/api/open", json={"name": "img_0001.png"}).json()["embedding"]["source"] in ("computed",
                                                                                                      "memory")
    session.embeddings._worker.submit(lambda: None).result()  # let the prefetch of img_0002 finish
    assert session.embeddings.computed == 3
    assert client.post("/api/open", json={"name": "img_0002.png"}).json()["embedding"]["source"] == "memory"
    session.embeddings.close()

    again, client2 = client_for(dataset, checkpoint)  # a restarted server reads them from disk
    assert client2.post("/api/open", json={"name": "img_0000.png"}).json()["embedding"]["source"] == "disk"
    assert again.embeddings.computed == 0
    again.embeddings.close()

    other = tiny_checkpoint(tmp_path / "other.pth", seed=4)  # another model never sees these embeddings
    third, client3 = client_for(dataset, other)
    assert client3.post("/api/open", json={"name": "img_0000.png"}).json()["embedding"]["source"] == "computed"
    assert third.embeddings.folder != session.embeddings.folder
    third.embeddings.close()


def test_png_export_writes_instance_ids(dataset, checkpoint, tmp_path):
    session, client = client_for(dataset, checkpoint, "--png_dir", str(tmp_path / "pngs"))
    first = accept(client, "img_0000.png", 0, box=[4, 4, 30, 30])
    accept(client, "img_0000.png", first["revision"], box=[30, 10, 60, 40])
    labels = cv2.imread(str(tmp_path / "pngs" / "img_0000.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16
    masks = [obj["mask"] for obj in session.store.objects("img_0000.png")]
    expected = np.zeros(labels.shape, np.uint16)
    for k, mask in enumerate(masks):
        expected[mask] = k + 1
    np.testing.assert_array_equal(labels, expected)


def test_bad_inputs_are_one_line_errors(dataset, checkpoint, tmp_path, capsys):
    ann = str(tmp_path / "a.json")
    cases = [
        (["--images", str(tmp_path / "missing"), "--checkpoint", str(checkpoint), "--annotations", ann,
          "--model_type", "tiny"], "images folder not found"),
        (["--images", str(dataset / "train"), "--checkpoint", str(checkpoint), "--annotations", ann],
         "the model type must be given"),
        (["--images", str(dataset / "train"), "--checkpoint", str(tmp_path / "none.pth"), "--annotations", ann,
          "--model_type", "tiny"], "checkpoint file not found"),
        (["--images", str(dataset / "train"), "--checkpoint", str(checkpoint), "--annotations",
          str(dataset / "truth.json"), "--model_type", "vit_b"], "holds a tiny SAM"),
        (["--images", str(dataset / "train"), "--checkpoint", str(checkpoint), "--model_type", "tiny",
          "--annotations", str(tmp_path / "no" / "a.json")], "does not exist"),
    ]
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [{"id": 1, "file_name": "../x.png", "height": 1, "width": 1}], '
                      '"annotations": [], "categories": []}')
    cases.append((["--images", str(dataset / "train"), "--checkpoint", str(checkpoint), "--model_type", "tiny",
                   "--annotations", str(broken)], "is not in the images folder"))
    if not torch.cuda.is_available():
        cases.append((["--images", str(dataset / "train"), "--checkpoint", str(checkpoint), "--model_type", "tiny",
                       "--annotations", ann, "--device", "cuda"], "no CUDA device"))
    for argv, message in cases:
        assert cli(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_samkit_annotate_is_annotate_py(tmp_path):
    from typer.testing import CliRunner

    from projects.cli import app

    result = CliRunner().invoke(app, ["annotate", "--images", str(tmp_path / "missing"), "--checkpoint", "x.pth",
                                      "--annotations", str(tmp_path / "a.json")])
    assert result.exit_code == 2 and "images folder not found" in result.output
    assert "--strategy_weights" in CliRunner().invoke(app, ["annotate", "--help"]).output


def test_bench_rows_measure_click_and_embedding():
    from projects.sam_finetune.annotator.bench import run_bench

    rows = {row["name"]: row for row in run_bench("tiny", threads=1, clicks=2)}
    assert set(rows) == {f"annotate_tiny_{k}" for k in ("embedding_seconds", "click_to_mask_ms",
                                                        "click_over_http_ms", "embedding_from_disk_ms")}
    assert all(row["value"] > 0 and ("costs" in row["note"] or "baseline" in row["note"]) for row in rows.values())


def test_normalization_flag_sets_the_input_scaling_of_a_bare_checkpoint(dataset, checkpoint):
    prompt = {"name": "img_0000.png", "box": [8, 6, 40, 30]}
    logits = {}
    for normalization in ("sam", "zero_one"):
        session, client = client_for(dataset, checkpoint, "--normalization", normalization)
        assert session.model.preprocessing.normalization == normalization
        candidates = client.post("/api/predict", json=prompt).json()["candidates"]
        expected, _, low_res = reference_predictor(session, dataset / "train" / "img_0000.png").predict(
            box=np.asarray(prompt["box"], np.float32), multimask_output=False)
        np.testing.assert_array_equal(decode_runs(candidates[0]["runs"], (48, 64)), expected[0])
        logits[normalization] = low_res
    assert np.abs(logits["sam"] - logits["zero_one"]).max() > 1e-3


def test_host_and_port_reach_the_server_and_the_address_is_printed(dataset, checkpoint, monkeypatch, capsys):
    import uvicorn

    from projects.sam_finetune.annotate import main

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(kwargs))
    main(["--images", str(dataset / "train"), "--checkpoint", str(checkpoint), "--model_type", "tiny",
          "--annotations", str(dataset / "a.json"), "--cache_dir", str(dataset / "cache"),
          "--host", "0.0.0.0", "--port", "7999"])
    assert served["host"] == "0.0.0.0" and served["port"] == 7999
    assert "http://0.0.0.0:7999/" in capsys.readouterr().out
