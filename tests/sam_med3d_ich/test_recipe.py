"""The README's fine-tuning command learns: on `samkit make-data sam_med3d_ich` data, a few epochs of
its flags with the tiny model beat the untrained model's validation Dice after 1 click; and the
README, the demo and the tool's defaults show one and the same recipe."""

import re
from pathlib import Path

from projects.sam_med3d_ich import demo
from projects.sam_med3d_ich.config import TrainConfig
from projects.sam_med3d_ich.train import main as train_main

README = Path(__file__).resolve().parents[2] / "projects" / "sam_med3d_ich" / "README.md"


def test_readme_recipe_is_the_demo_recipe_and_the_defaults():
    text = README.read_text()
    command = re.search(r"python projects/sam_med3d_ich/train\.py (.*?)\n(?!\s)", text, re.S).group(1)
    shown = " ".join(command.replace("\\\n", " ").split())
    pairs = " ".join(demo.README_RECIPE).replace("--target_spacing 1.5 1.5 1.5", "").split("--")[1:]
    for pair in pairs:
        assert f"--{pair.strip()}" in shown, pair
    cfg = TrainConfig()
    assert (cfg.lr, cfg.prompt_decoder_lr_scale, cfg.num_clicks, cfg.ce_weight, cfg.batch_size,
            cfg.target_spacing) == (3e-3, 1.0, 2, 0.0, 2, (1.5, 1.5, 1.5))


def test_readme_recipe_learns_on_generated_data(tmp_path):
    data = demo.make_data(tmp_path / "data")
    summary = train_main(demo.recipe_argv(data, tmp_path / "run", 5, "--num_workers", "0", "--val_clicks", "1"))
    untrained = demo.untrained_val_dice_1click(data)
    assert summary["select_best_by"] == "dice_1click"
    assert summary["best_val_dice"] > untrained + 0.1, (summary["best_val_dice"], untrained)
