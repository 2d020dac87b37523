"""Suite-wide settings: one torch thread per process. Tiny models gain nothing from intra-op threads
and, with two xdist workers on two cores, oversubscription makes them several times slower."""

import os

import torch

torch.set_num_threads(1)
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
