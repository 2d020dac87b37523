"""EncoderDecoder, the HSG and LightHam heads: structure, text guidance, no lazily created modules."""

from __future__ import annotations

import pytest
import torch

from projects.dformer_sam_attention.models.blocks.semantic_alignment import SemanticAlignmentModule
from projects.dformer_sam_attention.models.builder import (
    ModelSettings,
    build_model,
    parse_stages,
    settings_from_dict,
    settings_to_dict,
)
from projects.dformer_sam_attention.models.decoders.ham_head import NMF2D, LightHamHead
from projects.dformer_sam_attention.models.decoders.hsg_head import HSGHead
from shared.optim import build_optimizer

CLASSES, TEXT_DIM = 5, 16


def tiny_settings(**overrides) -> ModelSettings:
    base = dict(backbone="DFormerv2_Tiny", decoder="hsg", num_classes=CLASSES, decoder_embed_dim=32,
                decoder_align_heads=2, text_embed_dim=16, ham_rank=4, drop_path_rate=0.0, text_dim=TEXT_DIM)
    return ModelSettings(**{**base, **overrides})


def batch():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 64, 64, generator=generator), torch.rand(2, 1, 64, 64, generator=generator)


def test_every_module_exists_before_the_optimizer_and_all_are_trained():
    torch.manual_seed(0)
    model = build_model(tiny_settings(), torch.randn(CLASSES, TEXT_DIM))
    optimizer = build_optimizer("adamw", model, 1e-3, 0.01)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    names_before = dict(model.named_parameters())
    rgb, depth = batch()
    logits = model(rgb, depth)
    assert logits.shape == (2, CLASSES, 64, 64)
    assert dict(model.named_parameters()).keys() == names_before.keys()  # nothing created in forward
    logits.logsumexp(1).mean().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert id(param) in in_optimizer, name
            assert param.grad is not None, f"{name} gets no gradient"
    alignments = [n for n, m in model.named_modules() if isinstance(m, SemanticAlignmentModule)]
    assert alignments == [f"backbone.semantic_alignment.{i}" for i in range(4)] + ["decode_head.alignment"]


def test_without_text_guidance_there_is_no_alignment_and_no_text():
    model = build_model(tiny_settings(text_guidance=False))
    assert not any(isinstance(m, SemanticAlignmentModule) for m in model.modules())
    assert "text_embeddings" not in dict(model.named_buffers())
    assert model(*batch()).shape == (2, CLASSES, 64, 64)
    with pytest.raises(RuntimeError, match="no text guidance"):
        model.set_text_embeddings(torch.zeros(CLASSES, TEXT_DIM))


def test_text_embeddings_drive_the_logits_and_are_checked():
    torch.manual_seed(0)
    model = build_model(tiny_settings(sam_enc_stages=()), torch.randn(CLASSES, TEXT_DIM)).eval()
    rgb, depth = batch()
    before = model(rgb, depth)
    model.set_text_embeddings(torch.randn(CLASSES, TEXT_DIM))
    assert not torch.allclose(before, model(rgb, depth))
    with pytest.raises(ValueError, match="do not fit"):
        model.set_text_embeddings(torch.zeros(CLASSES + 1, TEXT_DIM))


def test_hsg_logits_are_classifier_plus_temperature_times_cosine():
    torch.manual_seed(0)
    head = HSGHead([8, 16, 24, 32], CLASSES, channels=16, text_dim=TEXT_DIM, align_heads=2, embed_dim=8).eval()
    features = [torch.randn(1, c, s, s) for c, s in zip([8, 16, 24, 32], [16, 8, 4, 2])]
    text = torch.randn(CLASSES, TEXT_DIM)
    with torch.no_grad():
        logits = head(features, text)
        head.text_embed.weight.zero_()
        head.text_embed.bias.zero_()  # zero class embeddings: cosine term vanishes
        learned_only = head(features, text)
    similarity = (logits - learned_only) / head.alignment.temperature().detach()
    assert float(similarity.abs().max()) <= 1.0 + 1e-5
    assert float(similarity.abs().max()) > 0.05


def test_ham_head_and_nmf():
    torch.manual_seed(0)
    model = build_model(tiny_settings(decoder="ham", sam_enc_stages=(2,)), torch.randn(CLASSES, TEXT_DIM))
    assert isinstance(model.decode_head, LightHamHead)
    assert list(model.backbone.semantic_alignment) == ["2"]
    assert model(*batch()).shape == (2, CLASSES, 64, 64)
    # NMF reconstructs a non-negative low-rank matrix well and keeps everything non-negative
    nmf = NMF2D(rank=3, train_steps=50, eval_steps=50).eval()
    low_rank = (torch.rand(1, 12, 3) @ torch.rand(1, 3, 20)).view(1, 12, 4, 5)
    reconstruction = nmf(low_rank)
    assert float(reconstruction.min()) >= 0
    assert float((reconstruction - low_rank).norm() / low_rank.norm()) < 0.1


def test_settings_roundtrip_and_stage_parsing():
    settings = tiny_settings(sam_enc_stages=(1, 3))
    assert settings_from_dict(settings_to_dict(settings)) == settings
    assert parse_stages("0,1,2,3") == (0, 1, 2, 3)
    assert parse_stages("") == ()
    assert parse_stages(" 3, 1") == (1, 3)
    with pytest.raises(ValueError, match="0..3"):
        parse_stages("4")
    with pytest.raises(ValueError, match="integers"):
        parse_stages("a")
    with pytest.raises(ValueError, match="unknown decoder"):
        build_model(tiny_settings(decoder="mlp"))
