"""DFormerv2: published key names and shapes, geometry attention, pretrained loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from projects.dformer_sam_attention.models.encoders.DFormerv2 import (
    BACKBONES,
    GeometrySelfAttention,
    GeoPriorGen,
    load_pretrained_backbone,
    rotate_every_two,
)
from shared.checkpoint import CheckpointError

# the reference folder sits beside the repository: ../shared/reference/
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "dformerv2_encoder_state_dict.json"


@pytest.mark.parametrize("name", ["DFormerv2_S", "DFormerv2_B", "DFormerv2_L"])
def test_full_size_state_dict_equals_reference(name):
    reference = json.loads(REFERENCE.read_text())[name]
    with torch.device("meta"):
        encoder = BACKBONES[name]()
    assert {k: list(v.shape) for k, v in encoder.state_dict().items()} == reference


def test_tiny_forward_shapes_and_depth_matters():
    torch.manual_seed(0)
    encoder = BACKBONES["DFormerv2_Tiny"]().eval()
    rgb, depth = torch.randn(2, 3, 64, 96), torch.rand(2, 1, 64, 96)
    outs = encoder(rgb, depth)
    assert [tuple(o.shape) for o in outs] == [(2, 16, 16, 24), (2, 32, 8, 12), (2, 48, 4, 6), (2, 64, 2, 3)]
    # the geometry prior makes the features depend on depth; only depth channel 0 is read
    assert not torch.allclose(encoder(rgb, torch.rand(2, 1, 64, 96))[3], outs[3])
    torch.testing.assert_close(encoder(rgb, torch.cat([depth, torch.rand(2, 2, 64, 96)], 1))[3], outs[3])


def test_decomposed_attention_equals_explicit_row_then_column_softmax():
    torch.manual_seed(0)
    heads, dim, height, width = 2, 16, 3, 5
    attention, geo = GeometrySelfAttention(dim, heads, decomposed=True), GeoPriorGen(dim, heads, 2, 4)
    x, depth = torch.randn(1, height, width, dim), torch.rand(1, 1, height, width)
    (sin, cos), (mask_h, mask_w) = prior = geo(height, width, depth, decomposed=True)
    q = rotate_every_two(attention.split_heads(attention.q_proj(x)), sin, cos) * (dim // heads) ** -0.5
    k = rotate_every_two(attention.split_heads(attention.k_proj(x)), sin, cos)
    v = attention.split_heads(attention.v_proj(x))
    # row pass: tokens (r, c) attend to (r, c') with the width mask
    v = torch.softmax(q @ k.transpose(-1, -2) + mask_w, -1) @ v
    qt, kt, vt = q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3)
    out = (torch.softmax(qt @ kt.transpose(-1, -2) + mask_h, -1) @ vt).transpose(2, 3)
    out = out.permute(0, 2, 3, 1, 4).reshape(1, height, width, dim)
    expected = attention.out_proj(out + attention.lepe(attention.v_proj(x)))
    torch.testing.assert_close(attention(x, prior), expected, atol=1e-5, rtol=1e-4)
    # the decay: log(1 − 2^(−2 − 4h/heads)) · Manhattan distance, negative and growing with distance
    assert torch.allclose(geo.decay, torch.log(1 - 2 ** (-2 - 4 * torch.arange(heads) / heads)))
    assert torch.all(mask_w[0, :, 0, 0, 1:] < 0) and float(geo.line_decay(width)[0, 0, 4]) == pytest.approx(
        4 * float(geo.decay[0]))


def test_full_attention_prior_combines_distance_and_depth():
    geo = GeoPriorGen(16, 2, 2, 4)
    depth = torch.zeros(1, 1, 2, 2)
    depth[..., 1, 1] = 1.0
    _, mask = geo(2, 2, depth, decomposed=False)
    decay = geo.decay
    # token 0 (0,0) to token 3 (1,1): Manhattan 2, depth difference 1, mix weights start at 1
    torch.testing.assert_close(mask[0, :, 0, 3], 2 * decay + 1 * decay)
    torch.testing.assert_close(mask[0, :, 0, 1], 1 * decay)
    assert F.softmax(mask[0, 0, 0], -1).argmax() == 0


def test_pretrained_weights_load_with_backbone_prefix_and_report(tmp_path):
    torch.manual_seed(0)
    source = BACKBONES["DFormerv2_Tiny"]()
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["backbone.head.weight"] = torch.zeros(3)  # e.g. an ImageNet classifier left in the file
    path = tmp_path / "pretrained.pth"
    torch.save({"state_dict": state}, path)
    target = BACKBONES["DFormerv2_Tiny"](sam_stages=(1,), text_dim=8)
    report = load_pretrained_backbone(target, path)
    assert report.unexpected == ["head.weight"]
    assert report.missing and all(k.startswith("semantic_alignment.1.") for k in report.missing)
    torch.testing.assert_close(target.patch_embed.proj[0].weight, source.patch_embed.proj[0].weight)
    torch.testing.assert_close(target.layers[3].blocks[0].Attention.q_proj.weight,
                               source.layers[3].blocks[0].Attention.q_proj.weight)
    wrong = {"backbone.patch_embed.proj.0.weight": torch.zeros(1, 1, 1, 1)}
    torch.save(wrong, tmp_path / "wrong.pth")
    report = load_pretrained_backbone(target, tmp_path / "wrong.pth")
    assert report.mismatched and report.mismatched[0][0] == "patch_embed.proj.0.weight"
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pth"):
        load_pretrained_backbone(target, tmp_path / "broken.pth")


def test_batchnorm_is_plain_and_encoder_alignment_needs_text():
    encoder = BACKBONES["DFormerv2_Tiny"](sam_stages=(0, 3), text_dim=8)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in encoder.modules())
    assert sorted(encoder.semantic_alignment) == ["0", "3"]
    with pytest.raises(ValueError, match="pass the class text embeddings"):
        encoder(torch.randn(1, 3, 32, 32), torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="sam_stages"):
        BACKBONES["DFormerv2_Tiny"](sam_stages=(4,))
