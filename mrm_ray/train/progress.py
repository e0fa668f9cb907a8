"""What a person watching a run sees: a progress line per few steps, eval lines, TensorBoard.

Only rank 0 writes. Lines go to the worker's stdout, which Ray forwards to the driver (and
to `ray job logs`); TensorBoard events go to `{output_dir}/{name}/tensorboard`.
"""

from __future__ import annotations

import time
from pathlib import Path


class Progress:
    def __init__(self, run, *, rank: int, total_steps: int, start_step: int, pairs_per_step: int) -> None:
        self.enabled = rank == 0
        self.total = total_steps
        self.every = run.train.log_every
        self.pairs_per_step = pairs_per_step
        self.first_step = start_step + 1
        self.last_time, self.last_step = time.perf_counter(), start_step
        self.writer = None
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(run.output_dir) / run.name / "tensorboard"))
            if start_step:
                print(f"[train] resumed at step {start_step}/{total_steps}", flush=True)

    def step(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(f"train/{key}", value, step)
        if step % self.every and step != self.total:
            return
        now = time.perf_counter()
        rate = (step - self.last_step) * self.pairs_per_step / max(now - self.last_time, 1e-9)
        eta = (self.total - step) * self.pairs_per_step / max(rate, 1e-9)
        self.last_time, self.last_step = now, step
        self.writer.add_scalar("train/pairs_per_s", rate, step)
        print(f"[train] step {step}/{self.total} | {rate:.1f} pairs/s | loss {metrics['loss']:.4f} | "
              f"acc {metrics['accuracy']:.3f} | lr {metrics['lr']:.2e} | eta {eta:.0f}s", flush=True)

    def evaluated(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        for key, value in metrics.items():
            if key.startswith(("held_out", "score_")):
                self.writer.add_scalar(f"eval/{key}", value, step)
        per_source = " ".join(f"{k.split('/', 1)[1]}={v:.3f}" for k, v in metrics.items()
                              if k.startswith("held_out_accuracy/"))
        print(f"[eval] step {step} | held-out acc {metrics['held_out_accuracy']:.3f} | loss "
              f"{metrics['held_out_loss']:.4f} | {per_source}", flush=True)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
