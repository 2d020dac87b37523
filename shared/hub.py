"""Loading a pretrained model by name or local folder, with the user's mistakes reported in one line.

Offline (no network, `HF_HUB_OFFLINE=1`) a hub name that is not in the local cache makes
transformers raise a long `OSError`; `from_pretrained_or_error` turns that into
`<name>: not found locally ...` with how to pass a local folder instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ModelNotFoundError(ValueError):
    """A model name or folder that cannot be loaded here; the message is one line."""


def missing_model_message(name: str, flag: str, problem: str) -> str:
    if Path(name).exists():
        return f"{name}: {problem}"
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    where = "not a local folder and not in the Hugging Face cache" + (" (offline)" if offline else "")
    return (f"{name}: {where}; on a machine with network run `huggingface-cli download {name} "
            f"--local-dir DIR`, copy DIR here and pass {flag} DIR")


def from_pretrained_or_error(load: Callable[..., T], name: str, *, flag: str = "--model_name", **kwargs: Any) -> T:
    """`load(name, **kwargs)` (e.g. `AutoModel.from_pretrained`), raising `ModelNotFoundError`
    with one line instead of transformers' multi-line OSError / ValueError."""
    try:
        return load(name, **kwargs)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelNotFoundError(missing_model_message(name, flag, first)) from None
