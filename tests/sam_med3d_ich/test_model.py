import argparse
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from projects.sam_med3d_ich.model import (
    ARCHITECTURES,
    SamMed3DICH,
    build_ich_model,
    load_sam_checkpoint,
    sam_model_registry3D,
)
from projects.sam_med3d_ich.modeling.image_encoder3d import (
    relative_position_table,
    window_partition,
    window_unpartition,
)
from shared.checkpoint import CheckpointError

# key manifest of the official vit_b_ori (sam_med3d_turbo.pth), copied into the repository
REFERENCE = Path(__file__).resolve().parent / "data" / "sam_med3d_vit_b_ori_state_dict.json"


def test_vit_b_ori_state_dict_equals_published_checkpoint_layout():
    reference = json.loads(REFERENCE.read_text())["vit_b_ori"]
    with torch.device("meta"):
        model = sam_model_registry3D["vit_b_ori"]()
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) == set(reference)
    assert ours == reference
    params = sum(p.numel() for p in model.parameters())
    encoder = sum(p.numel() for p in model.image_encoder.parameters())
    assert round(params / 1e6, 1) == 100.5 and round(encoder / 1e6, 1) == 92.9


def test_ich_model_adds_only_head_keys_to_the_published_layout():
    reference = set(json.loads(REFERENCE.read_text())["vit_b_ori"])
    with torch.device("meta"):
        model = build_ich_model("vit_b_ori", visual_tokens=256, visual_token_dim=768)
    extra = set(model.state_dict()) - reference
    assert reference <= set(model.state_dict())
    assert extra and all(k.startswith(("representation_head.", "ich_head.")) for k in extra)


def test_tiny_shapes_through_every_part():
    torch.manual_seed(0)
    model = build_ich_model("tiny", visual_tokens=8, visual_token_dim=32)
    arch = ARCHITECTURES["tiny"]
    images = torch.randn(2, 1, 32, 32, 32)
    embeddings = model.image_encoder(images)
    assert embeddings.shape == (2, arch.prompt_dim, arch.grid_size, arch.grid_size, arch.grid_size)
    points = (torch.tensor([[[3, 4, 5]], [[10, 10, 10]]]), torch.tensor([[1], [0]]))
    low_res = model.decode(embeddings, points, None)
    assert low_res.shape == (2, 1, arch.low_res_size, arch.low_res_size, arch.low_res_size)
    again = model.decode(embeddings, None, low_res)  # previous logits as dense prompt
    assert again.shape == low_res.shape
    tokens, logit = model.classify(embeddings)
    assert tokens.shape == (2, 8, 32) and logit.shape == (2,)


def test_forward_upsamples_trilinearly_with_gradients():
    torch.manual_seed(0)
    model = build_ich_model("tiny", 8, 32)
    images = torch.randn(1, 1, 32, 32, 32)
    full = model(images)
    low = model.decode(model.image_encoder(images))
    assert torch.allclose(full, F.interpolate(low, size=(32, 32, 32), mode="trilinear", align_corners=False))
    full.sum().backward()
    assert model.image_encoder.patch_embed.proj.weight.grad is not None


def test_padding_clicks_embed_as_not_a_point():
    model = build_ich_model("tiny", 8, 32)
    encoder = model.prompt_encoder
    sparse = encoder.embed_points(torch.zeros(2, 3, 3, dtype=torch.long), torch.full((2, 3), -1))
    assert sparse.shape == (2, 4, 48)  # one padding point appended, as the published model expects
    assert torch.allclose(sparse, encoder.not_a_point_embed.weight.expand(2, 4, -1))
    positive = encoder.embed_points(torch.tensor([[[1, 2, 3]]]), torch.tensor([[1]]))
    negative = encoder.embed_points(torch.tensor([[[1, 2, 3]]]), torch.tensor([[0]]))
    assert torch.allclose(positive[0, 0] - negative[0, 0],
                          encoder.point_embeddings[1].weight[0] - encoder.point_embeddings[0].weight[0])


def test_window_partition_round_trip_with_padding():
    x = torch.randn(2, 5, 7, 6, 4)
    windows, padded = window_partition(x, 3)
    assert windows.shape == (2 * 2 * 3 * 2, 3, 3, 3, 4) and padded == (6, 9, 6)
    assert torch.equal(window_unpartition(windows, 3, padded, (5, 7, 6)), x)


def test_relative_position_table_indexes_offsets_and_interpolates():
    table = torch.arange(5, dtype=torch.float32)[:, None].repeat(1, 2)  # 2*3-1 rows
    lookup = relative_position_table(3, table)
    assert lookup.shape == (3, 3, 2)
    assert lookup[0, 0, 0] == 2 and lookup[2, 0, 0] == 4 and lookup[0, 2, 0] == 0  # offset q-k + 2
    assert relative_position_table(4, table).shape == (4, 4, 2)  # 7 rows interpolated from 5


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = build_ich_model("tiny", 8, 32)
    images = torch.randn(1, 1, 32, 32, 32)
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.image_encoder.gradient_checkpointing = enabled
        model.image_encoder(images).square().mean().backward()
        grads.append(model.image_encoder.blocks[0].attn.qkv.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_published_style_checkpoint_loads_and_heads_keep_their_init(tmp_path):
    torch.manual_seed(0)
    source = sam_model_registry3D["tiny"]()
    path = tmp_path / "sam_med3d_turbo_like.pth"
    # the published file pickles an argparse Namespace next to the weights
    torch.save({"model_state_dict": source.state_dict(), "args": argparse.Namespace(lr=1e-4)}, path)
    model = build_ich_model("tiny", 8, 32)
    with pytest.warns(UserWarning, match="pickled Python objects"):
        missing_heads = load_sam_checkpoint(model, path)
    assert missing_heads and all(k.startswith(("representation_head.", "ich_head.")) for k in missing_heads)
    assert torch.equal(model.image_encoder.pos_embed, source.image_encoder.pos_embed)
    assert torch.equal(model.mask_decoder.iou_token.weight, source.mask_decoder.iou_token.weight)
    assert isinstance(model, SamMed3DICH)


def test_checkpoint_missing_or_misshaped_keys_fail_naming_file_and_key(tmp_path):
    state = sam_model_registry3D["tiny"]().state_dict()
    del state["image_encoder.neck.0.weight"]
    path = tmp_path / "broken.pth"
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"broken\.pth.*image_encoder\.neck\.0\.weight"):
        load_sam_checkpoint(build_ich_model("tiny", 8, 32), path)
    with torch.device("meta"):
        big = sam_model_registry3D["vit_b_ori"]().state_dict()
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_sam_checkpoint(sam_model_registry3D["tiny"](), {k: torch.zeros(v.shape) for k, v in big.items()})


def test_unknown_model_type_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model_type 'vit_q'.*vit_b_ori, tiny"):
        build_ich_model("vit_q")


def test_single_window_attention_computes_only_the_real_queries_with_the_same_result():
    """The 8^3 grid in a 14^3 window (vit_b_ori) as a 3^3 grid in a 5^3 window: real tokens' outputs equal
    those of full attention over the padded window (whose padding rows are then cut off)."""
    from projects.sam_med3d_ich.modeling.image_encoder3d import Block3D

    torch.manual_seed(0)
    block = Block3D(32, 2, 4.0, True, True, window_size=5, grid_size=(3, 3, 3))
    for table in (block.attn.rel_pos_d, block.attn.rel_pos_h, block.attn.rel_pos_w):
        torch.nn.init.normal_(table)
    x = torch.randn(2, 3, 3, 3, 32)
    padded, size = window_partition(block.norm1(x), 5)
    full = window_unpartition(block.attn(padded), 5, size, (3, 3, 3))
    expected = x + full
    expected = expected + block.mlp(block.norm2(expected))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_sdpa_attention_equals_the_explicit_softmax_formulation():
    """Attention3D (with SAM's decomposed relative positions) and the decoder's TokenAttention run through
    scaled_dot_product_attention; both equal softmax(q k^T / sqrt(d) + bias) v written out."""
    from projects.sam_med3d_ich.modeling.image_encoder3d import Attention3D
    from projects.sam_med3d_ich.modeling.transformer3d import TokenAttention

    torch.manual_seed(0)
    attention = Attention3D(32, 2, rel_pos_size=(3, 3, 3))
    for table in (attention.rel_pos_d, attention.rel_pos_h, attention.rel_pos_w):
        torch.nn.init.normal_(table)
    x = torch.randn(2, 3, 3, 3, 32)
    q, k, v = attention.qkv(x).reshape(2, 27, 3, 2, 16).permute(2, 0, 3, 1, 4)
    bias = attention._relative_position_bias(q, (3, 3, 3), (3, 3, 3))
    weights = torch.softmax(q @ k.transpose(-1, -2) / 16 ** 0.5 + bias, dim=-1)
    expected = attention.proj((weights @ v).transpose(1, 2).reshape(2, 3, 3, 3, 32))
    torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-5)

    tokens = TokenAttention(32, 4, downsample_rate=2)
    a, b = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    heads = [t.reshape(2, -1, 4, 4).transpose(1, 2) for t in (tokens.q_proj(a), tokens.k_proj(b), tokens.v_proj(b))]
    weights = torch.softmax(heads[0] @ heads[1].transpose(-1, -2) / 2.0, dim=-1)
    expected = tokens.out_proj((weights @ heads[2]).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(tokens(a, b, b), expected, rtol=1e-5, atol=1e-5)
