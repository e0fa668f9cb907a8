"""What a training checkpoint holds, and the proof that a restore brought all of it back.

A checkpoint is one directory that every rank writes into (Ray Train merges them):

    ds/                        DeepSpeed's state of every rank: weights, optimizer, schedule
                               (ZeRO-2/3 partitions included)
    rng_rank{R}.safetensors    each rank's torch RNG state (dropout resumes its sequence)
    trainer_state.json         step, micro-step (the position in the epoch) and the fingerprint
    run_config.json            the run that made it

The fingerprint (`state_fingerprint`) is the sum and the sum of squares of the module's
weights, the optimizer's master weights and its moments, summed over ranks, plus the
optimizer's step count. A restore recomputes it and refuses to train on when it differs:
a restore that silently lost the optimizer state (or loaded another run's weights) stops
with an error instead of training on from the wrong state.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch

TRAINER_STATE = "trainer_state.json"
RUN_CONFIG = "run_config.json"
DS_TAG = "ds"
FINGERPRINT_RTOL = 1e-9  # the same tensors summed the same way: only a lost or different state moves it


def _rng_file(rank: int) -> str:
    return f"rng_rank{rank}.safetensors"


def _inner_optimizer(engine):
    """The torch optimizer whose params are the fp32 masters (DeepSpeed's ZeRO wrappers hold it)."""
    optimizer = engine.optimizer
    return getattr(optimizer, "optimizer", optimizer)


def state_fingerprint(engine) -> dict[str, float]:
    """Sums and sums of squares (float64) of weights, master weights and optimizer moments, over ranks."""
    import torch.distributed as dist

    sums = torch.zeros(7, dtype=torch.float64)

    def add(offset: int, tensor: torch.Tensor) -> None:
        t = tensor.detach().double().cpu()
        sums[offset] += t.sum()
        sums[offset + 1] += (t * t).sum()

    for p in engine.module.parameters():
        add(0, getattr(p, "ds_tensor", p))  # ZeRO-3 keeps only this rank's partition
    optimizer = _inner_optimizer(engine)
    for group in optimizer.param_groups:
        for p in group["params"]:
            add(2, p)
            for key, value in optimizer.state.get(p, {}).items():
                if key == "step":
                    sums[6] += float(value)
                elif isinstance(value, torch.Tensor) and value.dim() > 0:
                    add(4, value)
    if dist.is_initialized():
        dist.all_reduce(sums)
    names = ("weights_sum", "weights_sq", "master_sum", "master_sq", "moments_sum", "moments_sq", "adam_steps")
    return dict(zip(names, sums.tolist()))


def fingerprints_match(a: dict[str, float], b: dict[str, float], *, rtol: float = FINGERPRINT_RTOL) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=rtol, abs_tol=1e-12) for k in a)


def save(engine, *, rank: int, state: dict, run_dict: dict, metrics: dict) -> dict:
    """Write this rank's part and report it; returns the fingerprint stored with it."""
    import ray.train
    from safetensors.torch import save_file

    fingerprint = state_fingerprint(engine)  # a collective: every rank computes it
    with tempfile.TemporaryDirectory() as tmp:
        engine.save_checkpoint(tmp, tag=DS_TAG)
        save_file(_rng_states(), str(Path(tmp, _rng_file(rank))))
        if rank == 0:
            Path(tmp, TRAINER_STATE).write_text(json.dumps({**state, "fingerprint": fingerprint}))
            Path(tmp, RUN_CONFIG).write_text(json.dumps(run_dict))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    return fingerprint


def restore(engine, checkpoint, *, rank: int) -> tuple[dict, dict]:
    """Load a checkpoint into the engine; returns (trainer state, the restored fingerprint).

    Raises when the restored state's fingerprint differs from the one saved with it.
    """
    from safetensors.torch import load_file

    with checkpoint.as_directory() as ckpt_dir:
        engine.load_checkpoint(ckpt_dir, tag=DS_TAG, load_optimizer_states=True, load_lr_scheduler_states=True)
        state = json.loads(Path(ckpt_dir, TRAINER_STATE).read_text())
        rng = Path(ckpt_dir, _rng_file(rank))
        if rng.is_file():
            _set_rng_states(load_file(str(rng)))
    restored = state_fingerprint(engine)
    saved = state.pop("fingerprint", None)
    if saved is not None and not fingerprints_match(saved, restored):
        raise RuntimeError(f"the checkpoint of step {state['step']} restored to a different state than it saved "
                           f"(saved {saved}, restored {restored}); it may be incomplete or from another run: "
                           "remove it from the run's ray_results to resume from an earlier one")
    return state, restored


def _rng_states() -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def _set_rng_states(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
