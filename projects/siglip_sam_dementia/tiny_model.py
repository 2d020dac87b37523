"""A tiny random-init SigLIP2 (NaFlex) with an offline tokenizer, saved like a hub checkpoint.

The folder it writes loads through exactly the code that loads `google/siglip2-base-patch16-naflex`
(`AutoModel.from_pretrained` -> `Siglip2Model`, `AutoProcessor.from_pretrained` -> `Siglip2Processor`),
so tests and the demo exercise the real path without a download.

    python projects/siglip_sam_dementia/tiny_model.py --out_dir runs/tiny_siglip2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    Siglip2Config,
    Siglip2ImageProcessor,
    Siglip2Model,
    Siglip2Processor,
    Siglip2TextConfig,
    Siglip2Tokenizer,
    Siglip2VisionConfig,
)
from transformers.utils import logging as hf_logging

from projects.siglip_sam_dementia.synthetic import LEXICON

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]  # byte fallback: any text encodes, nothing is <unk>


def train_tiny_tokenizer(vocab_size: int = 600) -> Siglip2Tokenizer:
    """A BPE vocabulary learned from the four languages' word lists, wrapped as a Siglip2Tokenizer.

    Uses the same normalisation (lower-case, spaces as '▁') as the real SigLIP2 tokenizer so merges
    learned here are the ones the Siglip2Tokenizer applies.
    """
    corpus = [" ".join(words + fillers) for words, fillers in LEXICON.values()]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(" ", "▁")])
    bpe.pre_tokenizer = pre_tokenizers.Split(pattern="▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + BYTE_TOKENS,
                                  show_progress=False)
    bpe.train_from_iterator(corpus * 4, trainer)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in json.loads(bpe.to_str())["model"]["merges"]]
    return Siglip2Tokenizer(vocab=bpe.get_vocab(), merges=merges)


def tiny_siglip2_config(vocab_size: int, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2,
                        patch_size: int = 8) -> Siglip2Config:
    text = Siglip2TextConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                             num_hidden_layers=num_layers, num_attention_heads=num_heads,
                             max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = Siglip2VisionConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                                 num_hidden_layers=num_layers, num_attention_heads=num_heads,
                                 patch_size=patch_size, num_patches=16)  # 4x4 position grid, interpolated
    return Siglip2Config(text_config=text, vision_config=vision)


def make_tiny_siglip2(out_dir: str | Path, hidden_size: int = 32, num_layers: int = 2, patch_size: int = 8,
                      max_num_patches: int = 64, seed: int = 0) -> Path:
    """Save a random-init tiny Siglip2Model + Siglip2Processor into `out_dir` (idempotent)."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists() and (out_dir / "processor_config.json").exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tiny_tokenizer()
    torch.manual_seed(seed)
    model = Siglip2Model(tiny_siglip2_config(len(tokenizer), hidden_size, num_layers, patch_size=patch_size))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # save_pretrained validates against a default text config (vocab 32000)
    try:
        model.save_pretrained(out_dir)
    finally:
        hf_logging.set_verbosity(verbosity)
    image_processor = Siglip2ImageProcessor(patch_size=patch_size, max_num_patches=max_num_patches)
    Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--hidden_size", type=int, default=32)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--patch_size", type=int, default=8)
    parser.add_argument("--max_num_patches", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_tiny_siglip2(args.out_dir, args.hidden_size, args.num_layers, args.patch_size,
                             args.max_num_patches, args.seed)
    print(f"tiny SigLIP2 saved to {path}")


if __name__ == "__main__":
    main()
