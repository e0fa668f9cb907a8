"""What a person watching a run sees: a progress line per few steps, eval lines, TensorBoard,
and `metrics.jsonl`, every step's numbers as data.

Only rank 0 writes. Lines go to the worker's stdout, which Ray forwards to the driver (and
to `ray job logs`); TensorBoard events go to `{output_dir}/{name}/tensorboard` (written
locally and uploaded at every evaluation when output_dir is a URI, storage.RunFolder). Each line
of `{output_dir}/{name}/metrics.jsonl` is one event: `train` (every optimizer step: loss,
accuracy, margin, learning rate per group, all averaged over ranks), `eval` (held-out
metrics), `checkpoint` and `restored` (the step and the state's fingerprint, see
checkpoint.py) and `stopped`. A resumed or restarted run appends, so a step trained twice
(after a worker was replaced) appears twice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

METRICS_LOG = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The events of a run's metrics.jsonl (a local run directory or its URI), oldest first."""
    from mrm_ray import storage

    where = storage.join(str(run_dir), METRICS_LOG)
    if not storage.exists(where):
        return []
    path = storage.local_copy(where)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Progress:
    def __init__(self, run, folder, *, rank: int, total_steps: int, pairs_per_step: int) -> None:
        """`folder`: the run's storage.RunFolder (rank 0 writes there)."""
        self.enabled = rank == 0
        self.total = total_steps
        self.every = run.train.log_every
        self.pairs_per_step = pairs_per_step
        self.first_step = 1
        self.last_time, self.last_step = time.perf_counter(), 0
        self.writer = self.log = None
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.folder = folder
            local_log = self.folder.local / METRICS_LOG
            if self.folder.remote and not local_log.is_file():  # a resumed run appends to what was uploaded
                self.folder.pull(METRICS_LOG)
            self.writer = SummaryWriter(str(self.folder.local / "tensorboard"))
            self.log = open(local_log, "a", encoding="utf-8")

    def _event(self, event: str, step: int, values: dict) -> None:
        self.log.write(json.dumps({"event": event, "step": step, "time": time.time(), **values}) + "\n")
        self.log.flush()

    def restored(self, step: int, fingerprint: dict) -> None:
        self.first_step = step + 1
        self.last_step = step
        if self.enabled:
            self._event("restored", step, {"fingerprint": fingerprint})
            print(f"[train] resumed at step {step}/{self.total}", flush=True)

    def step(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        self._event("train", step, metrics)
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
              f"acc {metrics['accuracy']:.3f} | lr {metrics['lr']:.2e} | "
              f"{metrics.get('real_token_share', 1.0):.0%} real tokens | eta {eta:.0f}s", flush=True)

    def evaluated(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        held = {k: v for k, v in metrics.items() if k.startswith(("held_out", "score_"))}
        self._event("eval", step, held)
        for key, value in held.items():
            self.writer.add_scalar(f"eval/{key}", value, step)
        per_source = " ".join(f"{k.split('/', 1)[1]}={v:.3f}" for k, v in metrics.items()
                              if k.startswith("held_out_accuracy/"))
        print(f"[eval] step {step} | held-out acc {metrics['held_out_accuracy']:.3f} | loss "
              f"{metrics['held_out_loss']:.4f} | {per_source}", flush=True)
        self.writer.flush()
        self._push()

    def _push(self) -> None:
        self.folder.push(METRICS_LOG)
        self.folder.push("tensorboard")

    def checkpointed(self, step: int, fingerprint: dict) -> None:
        if self.enabled:
            self._event("checkpoint", step, {"fingerprint": fingerprint})

    def stopped(self, step: int) -> None:
        if self.enabled:
            self._event("stopped", step, {})
            print(f"[train] stopped at step {step}/{self.total} (train.stop_at_step); run it again without "
                  "train.stop_at_step to resume here", flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.log.close()
            self._push()
