"""Class-name text embeddings from a transformers text tower (CLIP or SigLIP), cached per class list.

`ClassTextEmbedder(model_path).encode(class_names)` returns (T, C_t) L2-normalised embeddings of the
prompts "a photo of a {name}." The result is cached on disk under a key made of a hash of the text
model's files (weights, config, tokenizer: replacing the files at the same path makes a new key), the
template and the class names, so a second run (or another DDP rank) never loads the text model.

A model name is resolved to its local folder first (a folder, or the Hugging Face cache); a name that is
neither raises `ModelNotFoundError` with one line saying how to pass a local folder.
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
from shared.hub import ModelNotFoundError, from_pretrained_or_error, missing_model_message

FLAG = "--text_encoder"


def local_model_folder(name_or_path: str) -> Path:
    """The folder holding the model's files: `name_or_path` itself, or its snapshot in the HF cache."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotFoundError(f"{name_or_path}: not a model folder (a file)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception as error:  # noqa: BLE001 - any failure means: not available here
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelNotFoundError(missing_model_message(name_or_path, FLAG, first)) from None


def model_files_digest(folder: Path) -> str:
    """sha256 over the names and bytes of every file of the model folder."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts)
    if not files:
        raise ModelNotFoundError(f"{folder}: empty model folder (pass a transformers model folder to {FLAG})")
    for file in files:
        digest.update(str(file.relative_to(folder)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


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
        weights = model_files_digest(local_model_folder(self.model_name_or_path))
        key = json.dumps([weights, self.template, list(class_names)])
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

        folder = str(local_model_folder(self.model_name_or_path))
        tokenizer = from_pretrained_or_error(AutoTokenizer.from_pretrained, folder, flag=FLAG)
        model = from_pretrained_or_error(AutoModel.from_pretrained, folder, flag=FLAG).to(self.device).eval()
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
