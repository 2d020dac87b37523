"""The user's errors every entry point of the tool reports in one line with exit code 2."""

from __future__ import annotations

from projects.dformer_sam_attention.local_configs.config import ConfigError
from projects.dformer_sam_attention.utils.dataloader.RGBXDataset import DatasetError
from shared.checkpoint import CheckpointError
from shared.hub import ModelNotFoundError
from shared.run import RunError


class FlagError(ValueError):
    """A flag that cannot apply to the chosen configuration (it would be recorded but do nothing)."""


USER_ERRORS: tuple[type[BaseException], ...] = (DatasetError, CheckpointError, ConfigError, FlagError, RunError,
                                                 ModelNotFoundError)
