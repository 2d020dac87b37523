"""The annotation page in a real headless Chromium: click a generated object, accept it with Enter, and the
saved COCO annotation decodes to the mask SamPredictor gives for that click. `make test-browser`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.keys import Keys

from projects.sam_finetune.annotator.model import Prompts
from tests.browser.chromium import chromium, click_at, drag, page_idle, wait_until
from tests.sam_finetune.annotate_support import (
    generated_images,
    live_server,
    reference_predictor,
    session_for,
    tiny_checkpoint,
)

pytestmark = pytest.mark.browser


def inside_point(mask: np.ndarray) -> tuple[int, int]:
    """The object pixel farthest from its border, as (x, y)."""
    import cv2

    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    y, x = np.unravel_index(np.argmax(distance), distance.shape)
    return int(x), int(y)


def test_click_accept_saves_the_models_mask(tmp_path):
    root = generated_images(tmp_path / "data", count=3, seed=2)
    truth = COCO(str(root / "annotations" / "instances_train.json"))
    checkpoint = tiny_checkpoint(tmp_path / "tiny_sam.pth", seed=5)
    annotation_file = tmp_path / "annotations.json"
    session = session_for(root / "train", checkpoint, annotation_file, "--categories", "target,distractor")
    name = "img_0000.png"
    image_path = root / "train" / name
    # a generated target whose click gives this random model a non-empty mask (empty ones cannot be saved)
    embedding, _ = session.embeddings.get(image_path)
    targets = [truth.annToMask(a) for a in truth.loadAnns(truth.getAnnIds(imgIds=[1], catIds=[1], iscrowd=False))]
    click = next(p for p in map(inside_point, targets)
                 if session.model.predict(embedding, Prompts([p], [1])).masks[0].any())

    with live_server(session) as url, chromium() as driver:
        driver.get(url + "/")
        wait_until(lambda: page_idle(driver) and driver.execute_script("return window.annotator.state.picture !== null"),
                   "the first image")
        assert driver.find_element("id", "progress").text == "0 / 3 annotated"
        assert "Enter" in driver.find_element("id", "shortcuts").text
        # zoom in with the wheel around the object: the click below must still land on the same image pixel
        to_screen = "return window.annotator.imageToClient(arguments[0], arguments[1])"
        before = driver.execute_script(to_screen, *click)
        scale = driver.execute_script("return window.annotator.state.view.scale")
        ActionChains(driver).scroll_from_origin(
            ScrollOrigin.from_viewport(int(before["x"]) + 30, int(before["y"]) + 20), 0, -300).perform()
        wait_until(lambda: driver.execute_script("return window.annotator.state.view.scale") > 1.3 * scale, "the zoom")
        screen = driver.execute_script(to_screen, *click)
        click_at(driver, screen["x"], screen["y"])
        wait_until(lambda: page_idle(driver) and driver.execute_script(
            "return window.annotator.state.candidates.length === 4"), "the mask candidates")
        assert driver.execute_script("return window.annotator.state.prompts.points") == [list(click)]
        ActionChains(driver).send_keys(Keys.ENTER).perform()
        wait_until(lambda: "saved object" in driver.find_element("id", "message").text, "the save")
        assert driver.find_element("id", "progress").text == "1 / 3 annotated"

        saved = json.loads(annotation_file.read_text())
        [annotation] = saved["annotations"]
        assert annotation["sam_prompts"]["points"] == [list(click)] and annotation["sam_prompts"]["labels"] == [1]
        mask = mask_utils.decode({"size": annotation["segmentation"]["size"],
                                  "counts": annotation["segmentation"]["counts"].encode()}).astype(bool)
        expected, _, _ = reference_predictor(session, image_path).predict(
            point_coords=np.asarray([click], np.float32), point_labels=np.asarray([1]), multimask_output=False)
        np.testing.assert_array_equal(mask, expected[0])
        assert annotation["category_id"] == 1 and saved["images"][0]["file_name"] == name

        # Z with no prompt pending deletes the last object; N moves to the next image
        ActionChains(driver).send_keys("z").perform()
        wait_until(lambda: "deleted object" in driver.find_element("id", "message").text, "the undo")
        assert json.loads(annotation_file.read_text())["annotations"] == []
        ActionChains(driver).send_keys("n").perform()
        wait_until(lambda: driver.execute_script("return window.annotator.state.name") == "img_0001.png"
                   and page_idle(driver), "the next image")

        # on the next image: a dragged box and a right-click background point make one prompt
        box, background = [6, 4, 40, 30], (2, 44)
        start, end = (driver.execute_script(to_screen, *corner) for corner in (box[:2], box[2:]))
        drag(driver, (start["x"], start["y"]), (end["x"], end["y"]))
        wait_until(lambda: page_idle(driver) and driver.execute_script(
            "return window.annotator.state.candidates.length === 4"), "the box's mask")
        screen = driver.execute_script(to_screen, *background)
        click_at(driver, screen["x"], screen["y"], button="right")
        wait_until(lambda: page_idle(driver) and driver.execute_script(
            "return window.annotator.state.prompts.points.length === 1"), "the background point")
        assert driver.execute_script("return window.annotator.state.prompts") == {
            "box": box, "points": [list(background)], "labels": [0]}
        ActionChains(driver).send_keys(Keys.ENTER).perform()
        wait_until(lambda: "saved object" in driver.find_element("id", "message").text, "the second save")
        [annotation] = json.loads(annotation_file.read_text())["annotations"]
        mask = mask_utils.decode({"size": annotation["segmentation"]["size"],
                                  "counts": annotation["segmentation"]["counts"].encode()}).astype(bool)
        expected, _, _ = reference_predictor(session, root / "train" / "img_0001.png").predict(
            point_coords=np.asarray([background], np.float32), point_labels=np.asarray([0]),
            box=np.asarray(box, np.float32), multimask_output=False)
        np.testing.assert_array_equal(mask, expected[0])
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
