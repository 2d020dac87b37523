"""Registry, checkpoint loading, the three strategies, and their exports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import LoraConfig
from peft.tuners.lora import LoraModel
from segment_anything import SamPredictor, sam_model_registry

from projects.sam_finetune.config import config_from_dict
from projects.sam_finetune.modeling.adapters import (
    AttentionWithAdapter,
    BottleneckAdapter,
    MLPWithParallelAdapter,
)
from projects.sam_finetune.modeling.build import build_sam, build_sam_tiny
from projects.sam_finetune.modeling.lora import lora_module_names
from projects.sam_finetune.modeling.prompted_sam import ImagePrompts, PromptedSam
from projects.sam_finetune.modeling.strategies import (
    apply_strategy,
    count_parameters,
    describe_trainable,
    load_finetuned,
    stock_sam,
    stock_sam_state_dict,
    strategy_weights,
)
from shared.checkpoint import CheckpointError
from tests.sam_finetune.helpers import IMAGE_SIZE


def _cfg(strategy="full", **sections):
    data = {"model": {"type": "tiny"}, "data": {"image_size": IMAGE_SIZE}, "finetuning": {"strategy": strategy}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return config_from_dict(data)


def _tiny(seed=0):
    torch.manual_seed(seed)
    return build_sam_tiny(image_size=IMAGE_SIZE)


def _inputs():
    torch.manual_seed(1)
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    prompts = [ImagePrompts(boxes=torch.tensor([[4.0, 6.0, 40.0, 30.0], [20.0, 20.0, 60.0, 50.0]])),
               ImagePrompts(point_coords=torch.tensor([[[30.0, 30.0], [5.0, 5.0]]]),
                            point_labels=torch.tensor([[1, 0]]))]
    return images, prompts


def _randomize(module, prefix_filter):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if prefix_filter(name):
                p.normal_(0, 0.2)


def test_prompted_sam_batches_images_with_several_prompts_and_matches_stock_sam():
    sam = _tiny()
    images, prompts = _inputs()
    outputs = PromptedSam(sam)(prompts, images=images)
    assert [o[0].shape for o in outputs] == [(2, 1, 32, 32), (1, 1, 32, 32)]
    raw = images[0] * sam.pixel_std + sam.pixel_mean  # Sam.forward (no_grad) normalises by itself
    stock = sam([{"image": raw, "original_size": (IMAGE_SIZE, IMAGE_SIZE), "boxes": prompts[0].boxes}], False)
    torch.testing.assert_close(stock[0]["low_res_logits"], outputs[0][0], atol=1e-4, rtol=1e-4)


def test_tiny_checkpoint_roundtrip_and_foreign_checkpoints(tmp_path):
    sam = _tiny()
    path = tmp_path / "tiny.pth"
    torch.save(sam.state_dict(), path)
    loaded = build_sam_tiny(path)  # the stock classes, input size read from the checkpoint
    assert loaded.image_encoder.img_size == IMAGE_SIZE
    assert all(torch.equal(a, b) for a, b in zip(sam.state_dict().values(), loaded.state_dict().values()))
    assert build_sam("tiny", path).image_encoder.img_size == IMAGE_SIZE
    with pytest.raises(CheckpointError, match=r"tiny\.pth: tiny SAM trained at image size 64, but data.image_size is 128"):
        build_sam("tiny", path, image_size=128)
    vit_h_like = tmp_path / "vit_h.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1280, 3, 16, 16)}, vit_h_like)
    with pytest.raises(CheckpointError, match=r"vit_h\.pth: holds a vit_h SAM, but model.type is tiny"):
        build_sam("tiny", vit_h_like)
    partial_state = {k: v for k, v in sam.state_dict().items() if not k.startswith("mask_decoder.")}
    torch.save(partial_state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"partial\.pth: does not fit Sam: \d+ missing keys: mask_decoder"):
        build_sam("tiny", tmp_path / "partial.pth")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"tiny\.pth: not a readable checkpoint"):
        build_sam("tiny", path)


def test_lora_wraps_exactly_the_attention_linears():
    sam = _tiny()
    finetuned = apply_strategy(sam, _cfg("lora"))
    assert lora_module_names(sam) == [f"image_encoder.blocks.{i}.attn.{n}" for i in range(2) for n in ("qkv", "proj")]
    # why: PEFT's suffix matching of ["qkv", "proj"] also takes the patch-embedding convolution
    naive = _tiny()
    LoraModel(naive, LoraConfig(r=2, target_modules=["qkv", "proj"]), "default")
    assert "image_encoder.patch_embed.proj" in lora_module_names(naive)
    only_qkv = _tiny()
    apply_strategy(only_qkv, _cfg("lora", finetuning={"lora": {"target_modules": ["qkv"]}}))
    assert lora_module_names(only_qkv) == ["image_encoder.blocks.0.attn.qkv", "image_encoder.blocks.1.attn.qkv"]
    trainable = {n for n, p in sam.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("image_encoder")} == \
        {n for n, _ in sam.image_encoder.named_parameters(prefix="image_encoder") if "lora_" in n}
    assert all(n.startswith("mask_decoder") or "lora_" in n for n in trainable)  # prompt encoder frozen by default
    counts = describe_trainable(finetuned)
    assert counts["lora_modules"] == 4
    assert counts["trainable_image_encoder"] == 2 * (4 * 32 + 96 * 4 + 4 * 32 + 32 * 4)  # r=4 on qkv (32->96), proj
    assert counts["trainable_parameters"] == counts["trainable_image_encoder"] + count_parameters(sam.mask_decoder)[1]


def test_lora_on_vit_b_targets_24_linears_and_merges_to_the_official_keys():
    with torch.device("meta"):
        vit_b = sam_model_registry["vit_b"]()
        reference = {k: tuple(v.shape) for k, v in sam_model_registry["vit_b"]().state_dict().items()}
        cfg = config_from_dict({"model": {"type": "vit_b"}, "finetuning": {"strategy": "lora"}})
        finetuned = apply_strategy(vit_b, cfg)
        merged = {k: tuple(v.shape) for k, v in stock_sam(finetuned).state_dict().items()}
    names = lora_module_names(vit_b)
    assert len(names) == 24 and all(n.endswith(("attn.qkv", "attn.proj")) for n in names)
    assert merged == reference


def test_lora_config_keys_change_the_model():
    def lora_layer(**lora):
        sam = _tiny()
        apply_strategy(sam, _cfg("lora", finetuning={"lora": lora}))
        return sam.image_encoder.blocks[0].attn.qkv

    base = lora_layer()
    assert base.lora_A["default"].weight.shape == (4, 32) and base.scaling["default"] == 2.0
    assert lora_layer(r=8).lora_A["default"].weight.shape == (8, 32)
    assert lora_layer(alpha=16).scaling["default"] == 4.0
    assert isinstance(lora_layer(dropout=0.3).lora_dropout["default"], torch.nn.Dropout)
    assert isinstance(base.lora_dropout["default"], torch.nn.Identity)


def test_adapters_start_as_identity_freeze_the_encoder_and_follow_their_keys():
    images, prompts = _inputs()
    base = _tiny()
    reference = base.image_encoder(images)
    sam = _tiny()
    finetuned = apply_strategy(sam, _cfg("adapter", model={"freeze_image_encoder": False}))
    torch.testing.assert_close(sam.image_encoder(images), reference)  # zero-initialised up-projection
    block = sam.image_encoder.blocks[0]
    assert isinstance(block.attn, AttentionWithAdapter) and isinstance(block.mlp, MLPWithParallelAdapter)
    assert block.attn.adapter.down.out_features == 8  # bottleneck_ratio 0.25 of width 32
    encoder_trainable = {n for n, p in sam.image_encoder.named_parameters() if p.requires_grad}
    assert encoder_trainable and all(".adapter." in n for n in encoder_trainable)
    adapter_params = sum(p.numel() for n, p in sam.image_encoder.named_parameters() if ".adapter." in n)
    assert describe_trainable(finetuned)["trainable_image_encoder"] == adapter_params == 2 * 2 * (32 * 8 + 8 + 8 * 32 + 32)

    def adapted(**adapter):
        model = _tiny()
        apply_strategy(model, _cfg("adapter", finetuning={"adapter": adapter}))
        return model

    assert adapted(bottleneck_dim=3).image_encoder.blocks[1].mlp.adapter.down.out_features == 3
    assert adapted(bottleneck_ratio=0.5).image_encoder.blocks[1].attn.adapter.down.out_features == 16
    attn_only = adapted(placement="attn").image_encoder.blocks[0]
    mlp_only = adapted(placement="mlp").image_encoder.blocks[0]
    assert isinstance(attn_only.attn, AttentionWithAdapter) and not isinstance(attn_only.mlp, MLPWithParallelAdapter)
    assert isinstance(mlp_only.mlp, MLPWithParallelAdapter) and not isinstance(mlp_only.attn, AttentionWithAdapter)
    outputs = []
    for scale in (0.5, 1.0):
        model = adapted(placement="mlp", mlp_scale=scale)
        torch.manual_seed(5)
        _randomize(model.image_encoder, lambda n: ".adapter." in n)
        outputs.append(model.image_encoder(images))
    assert not torch.allclose(outputs[0], outputs[1]) and not torch.allclose(outputs[0], reference)
    assert isinstance(block.attn.adapter, BottleneckAdapter)


@pytest.mark.parametrize(("strategy", "model_flags", "expected_parts"), [
    ("full", {"freeze_image_encoder": False, "freeze_prompt_encoder": False, "freeze_mask_decoder": False},
     {"image_encoder", "prompt_encoder", "mask_decoder"}),
    ("full", {"freeze_image_encoder": True, "freeze_prompt_encoder": True, "freeze_mask_decoder": False},
     {"mask_decoder"}),
    ("full", {"freeze_image_encoder": True, "freeze_prompt_encoder": False, "freeze_mask_decoder": True},
     {"prompt_encoder"}),
    ("lora", {"freeze_mask_decoder": True}, {"image_encoder"}),
    ("adapter", {"freeze_prompt_encoder": False}, {"image_encoder", "prompt_encoder", "mask_decoder"}),
])
def test_freeze_flags_decide_what_trains(strategy, model_flags, expected_parts):
    sam = _tiny()
    finetuned = apply_strategy(sam, _cfg(strategy, model=model_flags))
    parts = {n.split(".")[0] for n, p in sam.named_parameters() if p.requires_grad}
    assert parts == expected_parts
    counts = describe_trainable(finetuned)
    assert counts["trainable_parameters"] == count_parameters(sam)[0] == sum(
        counts[f"trainable_{part}"] for part in ("image_encoder", "prompt_encoder", "mask_decoder"))


def test_nothing_trainable_is_an_error():
    with pytest.raises(ValueError, match="trains nothing"):
        apply_strategy(_tiny(), _cfg("full", model={"freeze_mask_decoder": True}))


@pytest.mark.parametrize("strategy", ["full", "lora", "adapter"])
def test_exports_load_into_stock_sam_and_reproduce_the_model(strategy, tmp_path):
    sam = _tiny()
    finetuned = apply_strategy(sam, _cfg(strategy, model={"freeze_image_encoder": False}))
    torch.manual_seed(3)
    _randomize(sam, lambda n: "lora_" in n or ".adapter." in n or n.startswith("mask_decoder"))
    images, prompts = _inputs()
    sam.eval()
    with torch.no_grad():
        expected = PromptedSam(sam)(prompts, images=images)

    stock_path = tmp_path / "best_model_sam.pth"
    torch.save(stock_sam_state_dict(finetuned), stock_path)
    stock = build_sam_tiny(stock_path)  # the stock classes, strict load, no extra code
    assert set(stock.state_dict()) == set(build_sam_tiny().state_dict())
    with torch.no_grad():
        from_stock = PromptedSam(stock)(prompts, images=images)
    if strategy == "adapter":  # adapters are non-linear: the stock file alone is the model without them
        assert not torch.allclose(from_stock[0][0], expected[0][0])
        payload = strategy_weights(finetuned)
        assert payload["strategy_config"]["bottleneck_dim"] is None and all(".adapter." in k for k in payload["state_dict"])
        rebuilt = load_finetuned("tiny", str(stock_path), IMAGE_SIZE, payload)
        with torch.no_grad():
            from_stock = PromptedSam(rebuilt.eval())(prompts, images=images)
    elif strategy == "lora":
        payload = strategy_weights(finetuned)
        assert payload["strategy_config"]["r"] == 4 and all("lora_" in k for k in payload["state_dict"])
    for (got, got_iou), (want, want_iou) in zip(from_stock, expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got_iou, want_iou, atol=1e-4, rtol=1e-4)

    predictor = SamPredictor(build_sam_tiny(stock_path))  # what a user of Meta's package does
    predictor.set_image(np.full((48, 64, 3), 128, np.uint8))
    masks, scores, _ = predictor.predict(box=np.array([4, 4, 40, 30]), multimask_output=False)
    assert masks.shape == (1, 48, 64) and scores.shape == (1,)
