"""Class-name text embeddings from a transformers text tower (CLIP or SigLIP), cached per class list.

`ClassTextEmbedder(model_path).encode(class_names)` returns (T, C_t) L2-normalised embeddings of the
prompts "a photo of a {name}." The result is cached on disk under a key made of the model path, the
template and the class names, so a second run (or another DDP rank) never loads the text model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from shared.checkpoint import load_checkpoint, save_checkpoint


class ClassTextEmbedder:
    def __init__(self, model_name_or_path: str, cache_dir: str | Path | None = None,
                 template: str = "a photo of a {}.", device: str | torch.device = "cpu"):
        if "{}" not in template:
            raise ValueError(f"text template {template!r} needs a {{}} for the class name")
        self.model_name_or_path = str(model_name_or_path)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.template = template
        self.device = torch.device(device)
        self.model_loads = 0  # how often the text tower was actually loaded (cache hits load none)

    def cache_path(self, class_names: Sequence[str]) -> Path | None:
        if self.cache_dir is None:
            return None
        key = json.dumps([self.model_name_or_path, self.template, list(class_names)])
        return self.cache_dir / f"text_embeddings_{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"

    def encode(self, class_names: Sequence[str]) -> Tensor:
        if not class_names:
            raise ValueError("no class names to embed")
        path = self.cache_path(class_names)
        if path is not None and path.is_file():
            cached = load_checkpoint(path)
            if cached.get("class_names") == list(class_names):
                return cached["embeddings"]
        embeddings = self._run_text_tower([self.template.format(name) for name in class_names])
        if path is not None:
            save_checkpoint(path, {"class_names": list(class_names), "model": self.model_name_or_path,
                                   "template": self.template, "embeddings": embeddings})
        return embeddings

    @torch.no_grad()
    def _run_text_tower(self, prompts: list[str]) -> Tensor:
        from transformers import AutoModel, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_name_or_path)
            model = AutoModel.from_pretrained(self.model_name_or_path).to(self.device).eval()
        except OSError as error:
            raise OSError(f"--text_encoder {self.model_name_or_path}: cannot load a text model "
                          f"({str(error).splitlines()[0]})") from None
        self.model_loads += 1
        model_type = getattr(model.config, "model_type", "")
        if "siglip" in model_type:  # SigLIP text towers were trained on 64 padded, lower-cased tokens
            tokens = tokenizer([p.lower() for p in prompts], padding="max_length", max_length=64,
                               truncation=True, return_tensors="pt")
        else:
            tokens = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        keep = ("input_ids",) if model_type == "siglip" else ("input_ids", "attention_mask")
        # SigLIP v1 was trained with its padding visible (its tokenizer returns no attention mask)
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in keep}
        if hasattr(model, "get_text_features"):
            out = model.get_text_features(**tokens)
        else:  # a bare text tower
            out = model(**tokens)
        features = out if isinstance(out, Tensor) else out.pooler_output
        return F.normalize(features.float(), dim=-1).cpu()
