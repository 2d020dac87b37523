"""A tiny random CLIP (text width 32) with an offline byte-level tokenizer, saved with save_pretrained.

It stands in for `openai/clip-vit-base-patch32` in tests and the demo: the same loading code
(`AutoModel`, `AutoTokenizer`) and the same `get_text_features` path, no download.
"""

from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_clip(out_dir: str | Path, projection_dim: int = 32, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "tokenizer.json").is_file():
        return out_dir
    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(byte_chars)}
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    vocab[bos], vocab[eos] = len(vocab), len(vocab) + 1
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, pad_token=eos,
                                   model_max_length=64)

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=vocab[bos],
                         eos_token_id=vocab[eos], pad_token_id=vocab[eos]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        projection_dim=projection_dim,
    )
    CLIPModel(config).save_pretrained(out_dir)
    fast.save_pretrained(out_dir)
    return out_dir
