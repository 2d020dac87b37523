"""Two gloo processes on CPU: box-only prompts leave prompt-encoder weights without gradient, so DDP
needs `device.find_unused_parameters` unless the prompt encoder is frozen; train.py under DDP freezes
those weights itself (or refuses a config it cannot serve, naming the key)."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from projects.sam_finetune import train
from projects.sam_finetune.config import ConfigError, config_from_dict
from projects.sam_finetune.dataset import PromptedSegmentationDataset, collate_prompted
from projects.sam_finetune.engine import batch_loss
from projects.sam_finetune.losses import SamFinetuneLoss
from projects.sam_finetune.modeling.prompted_sam import PromptedSam
from projects.sam_finetune.modeling.strategies import build_finetuned_sam, freeze_unreachable_parameters
from shared.distributed import make_dataloader, setup_distributed, wrap_model_ddp
from shared.tracking import read_jsonl
from tests.sam_finetune.helpers import tiny_config, write_config

WORLD_SIZE = 2
SCENARIOS = {  # name: (freeze_prompt_encoder, find_unused_parameters)
    "trainable_prompt_encoder": (False, False),
    "trainable_prompt_encoder_find_unused": (False, True),
    "frozen_prompt_encoder": (True, False),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, data_dir: str, base: str, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = setup_distributed("cpu")
    results: dict[str, str] = {}
    for name, (freeze_prompt, find_unused) in SCENARIOS.items():
        cfg = config_from_dict(tiny_config(Path(data_dir), Path(out_dir), Path(base),
                                           model={"freeze_prompt_encoder": freeze_prompt},
                                           device={"find_unused_parameters": find_unused}))
        torch.manual_seed(0)
        model = PromptedSam(build_finetuned_sam(cfg).sam)
        ddp = wrap_model_ddp(model, ctx, find_unused_parameters=cfg.device.find_unused_parameters)
        dataset = PromptedSegmentationDataset(cfg.data, "train", train=True)
        loader = make_dataloader(dataset, 2, shuffle=False, seed=0, collate_fn=collate_prompted)
        loss_fn = SamFinetuneLoss(cfg.loss)
        try:
            for _, batch in zip(range(2), loader):  # DDP notices missing gradients at the next forward
                loss, _ = batch_loss(ddp, batch, loss_fn, ctx.device, None)
                loss.backward()
            grad = model.sam.mask_decoder.iou_token.weight.grad
            gathered = [torch.zeros_like(grad) for _ in range(WORLD_SIZE)]
            torch.distributed.all_gather(gathered, grad)
            results[name] = "ok" if torch.equal(gathered[0], gathered[1]) else "gradients differ across ranks"
        except RuntimeError as error:
            results[name] = str(error).splitlines()[0]

    # one image per batch, one of which fails to load: its rank has nothing to step on; a trainable
    # prompt encoder with box prompts and find_unused_parameters false: train.py freezes what no box reaches
    config = tiny_config(Path(out_dir) / "data", Path(out_dir), Path(base), model={"freeze_prompt_encoder": False},
                         device={"find_unused_parameters": False}, data={"batch_size": 1})
    summary = train.main(["--config", str(write_config(Path(out_dir) / f"ddp_{rank}.yaml", config)), "--device", "cpu"])
    results["train_run_dir"] = summary["run_dir"]
    results["train_best_val_iou"] = summary["best_val_iou"]
    results["train_skipped_at_load"] = summary["skipped_at_load"]
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory, directory_data, base_checkpoint):
    out_dir = tmp_path_factory.mktemp("ddp")
    shutil.copytree(directory_data, out_dir / "data")
    # passes the checks at indexing, but its one-pixel object vanishes when shrunk to 64 px at loading
    cv2.imwrite(str(out_dir / "data" / "images" / "train" / "zz_large.png"), np.full((480, 640, 3), 90, np.uint8))
    speck = np.zeros((480, 640), np.uint8)
    speck[1, 1] = 255
    cv2.imwrite(str(out_dir / "data" / "masks" / "train" / "zz_large.png"), speck)
    # fork: the children inherit the imported modules instead of spending seconds importing them again
    mp.start_processes(_worker, args=(_free_port(), str(directory_data), str(base_checkpoint), str(out_dir)),
                       nprocs=WORLD_SIZE, join=True, start_method="fork")
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]


def test_box_prompts_with_a_trainable_prompt_encoder_need_find_unused_parameters(ddp_results):
    for results in ddp_results:
        assert "Expected to have finished reduction in the prior iteration" in results["trainable_prompt_encoder"]
        assert results["trainable_prompt_encoder_find_unused"] == "ok"
        assert results["frozen_prompt_encoder"] == "ok"


def test_train_py_runs_under_ddp_with_one_run_folder(ddp_results):
    assert ddp_results[0]["train_run_dir"] == ddp_results[1]["train_run_dir"]
    assert ddp_results[0]["train_best_val_iou"] == ddp_results[1]["train_best_val_iou"]  # metrics gathered over ranks
    run_dir = Path(ddp_results[0]["train_run_dir"])
    assert (run_dir / "best_model.pth").is_file() and (run_dir / "latest_model.pth").is_file()
    # the rank without a loadable sample did not leave the other waiting in DDP's all-reduce
    assert ddp_results[0]["train_skipped_at_load"] == ddp_results[1]["train_skipped_at_load"] == 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["world_size"] == WORLD_SIZE
    frozen = config["resolved"]["frozen_unreachable"]
    assert "prompt_encoder.point_embeddings.0.weight" in frozen and "prompt_encoder.not_a_point_embed.weight" in frozen
    assert "prompt_encoder.point_embeddings.2.weight" not in frozen  # box corners train
    losses = [row["train/loss"] for row in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in row]
    assert losses and all(math.isfinite(loss) for loss in losses)


def test_a_config_ddp_cannot_serve_without_find_unused_parameters_is_refused_naming_the_key(base_checkpoint):
    cfg = config_from_dict(tiny_config(Path("d"), Path("o"), base_checkpoint, model={"freeze_prompt_encoder": False},
                                       data={"prompt_mode": "both", "num_negative_points": 1}))
    with pytest.raises(ConfigError, match="device.find_unused_parameters: must be true under DDP"):
        freeze_unreachable_parameters(build_finetuned_sam(cfg).sam, cfg)
