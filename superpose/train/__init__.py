"""The one training core under the toy, GPT and SAE trainers: the learning-rate schedule and
its config fields (`schedule`), Adam/AdamW construction (`optim`), the history and result shape
(`result`), and checkpoints with hashes, an atomic swap and one resume rule (`checkpoint`).
Each trainer keeps only what is its own: its step, its data and its measurements."""

from superpose.train import checkpoint, optim, result, schedule
from superpose.train.checkpoint import latest_checkpoint, list_checkpoints
from superpose.train.optim import adam
from superpose.train.result import History, TrainResult
from superpose.train.schedule import SCHEDULES, lr_at

__all__ = ["SCHEDULES", "History", "TrainResult", "adam", "checkpoint", "latest_checkpoint",
           "list_checkpoints", "lr_at", "optim", "result", "schedule"]
