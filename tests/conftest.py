"""Shared test set-up: CPU only, few threads, no network for W&B."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
