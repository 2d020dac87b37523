"""Class-name embeddings from a transformers text tower (a tiny random CLIP saved locally)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from projects.dformer_sam_attention.models.text_embeddings import ClassTextEmbedder
from shared.hub import ModelNotFoundError

NAMES = ["wall", "floor", "box"]


def test_embeddings_are_the_normalised_clip_text_features(tiny_clip, tmp_path):
    embedder = ClassTextEmbedder(tiny_clip, cache_dir=tmp_path)
    embeddings = embedder.encode(NAMES)
    assert embeddings.shape == (3, 32)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    model, tokenizer = AutoModel.from_pretrained(tiny_clip), AutoTokenizer.from_pretrained(tiny_clip)
    tokens = tokenizer(["a photo of a box."], return_tensors="pt")
    with torch.no_grad():
        expected = model.get_text_features(**tokens).pooler_output[0]
    torch.testing.assert_close(embeddings[2], expected / expected.norm(), atol=1e-5, rtol=1e-4)


def test_cached_per_class_list_without_loading_the_model_again(tiny_clip, tmp_path):
    first = ClassTextEmbedder(tiny_clip, cache_dir=tmp_path)
    embeddings = first.encode(NAMES)
    assert first.model_loads == 1
    second = ClassTextEmbedder(tiny_clip, cache_dir=tmp_path)
    assert torch.equal(second.encode(NAMES), embeddings)
    assert second.model_loads == 0  # served from the cache
    other = second.encode(["wall", "floor"])  # another class list: another cache entry
    assert second.model_loads == 1 and other.shape == (2, 32)
    assert len(list(tmp_path.glob("text_embeddings_*.pt"))) == 2
    templated = ClassTextEmbedder(tiny_clip, cache_dir=tmp_path, template="{}").encode(NAMES)
    assert not torch.allclose(templated, embeddings)


def test_bad_text_encoder_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="missing_model: not a local folder .* pass --text_encoder DIR"):
        ClassTextEmbedder(tmp_path / "missing_model").encode(NAMES)
    with pytest.raises(ModelNotFoundError, match="org/not-cached: not a local folder and not in the Hugging Face"):
        ClassTextEmbedder("org/not-cached", cache_dir=tmp_path).encode(NAMES)
    with pytest.raises(ValueError, match="needs a"):
        ClassTextEmbedder("x", template="no slot")


def test_cache_is_keyed_by_the_model_files_not_the_path(tiny_clip, tmp_path):
    """Replacing the model files at the same path must not reuse the old embeddings."""
    import shutil

    from projects.dformer_sam_attention.utils.tiny_text_encoder import make_tiny_clip

    folder = tmp_path / "clip"
    shutil.copytree(tiny_clip, folder)
    first = ClassTextEmbedder(folder, cache_dir=tmp_path / "cache").encode(NAMES)
    shutil.rmtree(folder)
    make_tiny_clip(folder, seed=1)  # other weights, same path
    embedder = ClassTextEmbedder(folder, cache_dir=tmp_path / "cache")
    second = embedder.encode(NAMES)
    assert embedder.model_loads == 1 and not torch.allclose(first, second)
    assert len(list((tmp_path / "cache").glob("text_embeddings_*.pt"))) == 2


def test_siglip_text_tower_uses_its_training_padding(tiny_clip, tmp_path):
    """SigLIP text towers were trained on lower-cased prompts padded to 64 tokens: embed them that way."""
    from transformers import SiglipConfig, SiglipModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, **special),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16))
    torch.manual_seed(0)
    SiglipModel(config).save_pretrained(tmp_path / "siglip")
    tokenizer.save_pretrained(tmp_path / "siglip")
    embeddings = ClassTextEmbedder(tmp_path / "siglip").encode(["Wall", "floor"])
    model = AutoModel.from_pretrained(tmp_path / "siglip")
    tokens = tokenizer(["a photo of a wall."], padding="max_length", max_length=64, return_tensors="pt")
    with torch.no_grad():
        expected = model.get_text_features(input_ids=tokens["input_ids"]).pooler_output[0]
    torch.testing.assert_close(embeddings[0], expected / expected.norm(), atol=1e-5, rtol=1e-4)
    short = tokenizer(["a photo of a wall."], return_tensors="pt")
    with torch.no_grad():
        unpadded = model.get_text_features(input_ids=short["input_ids"]).pooler_output[0]
    assert not torch.allclose(embeddings[0], unpadded / unpadded.norm(), atol=1e-4)
