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

# a copy of the reference manifest (../shared/reference/), kept in the repository so a clone tests alone
REFERENCE = Path(__file__).resolve().parent / "data" / "dformerv2_encoder_state_dict.json"


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
    # a file that does not fit (one mismatch, or < 95% of the encoder's tensors) is an error naming it
    wrong = dict(state)
    wrong["backbone.patch_embed.proj.0.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=r"wrong.pth: does not fit this encoder .*patch_embed.proj.0.weight "
                                              r"\(1, 1, 1, 1\) vs model"):
        load_pretrained_backbone(target, tmp_path / "wrong.pth")
    partial = {k: v for i, (k, v) in enumerate(state.items()) if i % 2}  # half of the encoder
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"partial.pth: does not fit this encoder \(\d+ of \d+ tensors load"):
        load_pretrained_backbone(target, tmp_path / "partial.pth")
    report = load_pretrained_backbone(target, tmp_path / "wrong.pth", allow_partial=True)  # explicit: loads what fits
    assert report.mismatched and report.mismatched[0][0] == "patch_embed.proj.0.weight"
    wider = BACKBONES["DFormerv2_Tiny"]()  # e.g. B weights into S: other widths, so nothing fits
    wider_state = {k: torch.zeros(*v.shape[:-1], v.shape[-1] + 1) if v.ndim else v for k, v in wider.state_dict().items()}
    torch.save(wider_state, tmp_path / "wider.pth")
    with pytest.raises(CheckpointError, match="wider.pth: does not fit this encoder"):
        load_pretrained_backbone(target, tmp_path / "wider.pth")
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


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients():
    """Checkpointed blocks recompute their activations in backward; drop path replays its RNG state."""
    torch.manual_seed(0)
    plain = BACKBONES["DFormerv2_Tiny"](drop_path_rate=0.3, sam_stages=(1, 3), text_dim=8).train()
    checkpointed = BACKBONES["DFormerv2_Tiny"](drop_path_rate=0.3, sam_stages=(1, 3), text_dim=8).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.set_gradient_checkpointing(True)
    rgb, depth, text = torch.randn(2, 3, 64, 64), torch.rand(2, 1, 64, 64), torch.randn(5, 8)
    results = []
    for encoder in (plain, checkpointed):
        torch.manual_seed(1)
        outs = encoder(rgb, depth, text)
        sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        results.append((outs, {n: p.grad for n, p in encoder.named_parameters()}))
    (outs_a, grads_a), (outs_b, grads_b) = results
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5, msg=name)
    # and it does recompute: the checkpointed forward keeps fewer tensors for backward
    saved = {id(plain): [], id(checkpointed): []}
    for encoder in (plain, checkpointed):
        sizes = saved[id(encoder)]
        with torch.autograd.graph.saved_tensors_hooks(lambda t, sizes=sizes: sizes.append(t.numel()) or t, lambda t: t):
            encoder(rgb, depth, text)
    assert sum(saved[id(checkpointed)]) < 0.5 * sum(saved[id(plain)])
