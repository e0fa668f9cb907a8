"""What a person watching a training run sees: a progress line per few steps, eval lines, TensorBoard,
and `metrics.jsonl`, every step's numbers as data (run_folder.py's MetricsLog).

Only rank 0 writes. Lines go to the worker's stdout, which Ray forwards to the driver (and to
`ray job logs`). Each line of `{output_dir}/{name}/metrics.jsonl` is one event: `train` (every
optimizer step: loss, accuracy, margin, learning rate per group, all averaged over ranks), `eval`
(held-out metrics), `checkpoint` and `restored` (the step and the state's fingerprint, see
checkpoint.py) and `stopped`; TensorBoard has the `train/` and `eval/` scalars, uploaded at every
evaluation when output_dir is a URI. A resumed or restarted run appends, so a step trained twice
(after a worker was replaced) appears twice.
"""

from __future__ import annotations

import time


class Progress:
    def __init__(self, run, folder, *, rank: int, total_steps: int, pairs_per_step: int) -> None:
        """`folder`: the run's RunFolder (rank 0 writes there)."""
        self.enabled = rank == 0
        self.total = total_steps
        self.every = run.train.log_every
        self.pairs_per_step = pairs_per_step
        self.first_step = 1
        self.last_time, self.last_step = time.perf_counter(), 0
        from mrm_ray.config import to_dict

        self.log = folder.metrics(enabled=self.enabled, tracking=run.tracking, name=run.name, params=to_dict(run))

    def restored(self, step: int, fingerprint: dict) -> None:
        self.first_step = step + 1
        self.last_step = step
        self.log.event("restored", step, {"fingerprint": fingerprint})
        if self.enabled:
            print(f"[train] resumed at step {step}/{self.total}", flush=True)

    def step(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        self.log.event("train", step, metrics, scalars="train")
        if step % self.every and step != self.total:
            return
        now = time.perf_counter()
        rate = (step - self.last_step) * self.pairs_per_step / max(now - self.last_time, 1e-9)
        eta = (self.total - step) * self.pairs_per_step / max(rate, 1e-9)
        self.last_time, self.last_step = now, step
        self.log.scalar("train/pairs_per_s", rate, step)
        print(f"[train] step {step}/{self.total} | {rate:.1f} pairs/s | loss {metrics['loss']:.4f} | "
              f"acc {metrics['accuracy']:.3f} | lr {metrics['lr']:.2e} | "
              f"{metrics.get('real_token_share', 1.0):.0%} real tokens | eta {eta:.0f}s", flush=True)

    def evaluated(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        held = {k: v for k, v in metrics.items() if k.startswith(("held_out", "score_"))}
        self.log.event("eval", step, held, scalars="eval")
        per_source = " ".join(f"{k.split('/', 1)[1]}={v:.3f}" for k, v in metrics.items()
                              if k.startswith("held_out_accuracy/"))
        print(f"[eval] step {step} | held-out acc {metrics['held_out_accuracy']:.3f} | loss "
              f"{metrics['held_out_loss']:.4f} | {per_source}", flush=True)
        self.log.flush()

    def checkpointed(self, step: int, fingerprint: dict) -> None:
        self.log.event("checkpoint", step, {"fingerprint": fingerprint})

    def stopped(self, step: int) -> None:
        self.log.event("stopped", step, {})
        if self.enabled:
            print(f"[train] stopped at step {step}/{self.total} (train.stop_at_step); run it again without "
                  "train.stop_at_step to resume here", flush=True)

    def close(self) -> None:
        self.log.close()
