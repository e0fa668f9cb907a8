"""The two kinds of Ray actor in the GRPO loop.

`RolloutWorker` holds a copy of the policy and samples G responses per prompt; it takes
new weights (one object in the object store, shared by all workers) after every update.
`Learner` holds the trained policy, the frozen reference and the optimizer: it turns
rollouts and their rewards into group-normalised advantages and clipped policy-gradient
updates, and writes resumable checkpoints (safetensors weights, optimizer state, step).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from mrm_ray.rl.grpo import group_advantages, grpo_loss


def _threads(n: float) -> None:
    torch.set_num_threads(max(1, int(n)))  # an actor's share of the node, not every core


def _route_logs(location: str, process: str) -> None:
    from mrm_ray.logs import no_progress_bars
    from mrm_ray.run_folder import RunFolder

    no_progress_bars()
    RunFolder(location).route_logs(process)


class RolloutWorker:
    def __init__(self, policy_path: str, *, dtype: str, max_pixels: int | None, cpus: float, device: str,
                 log_to: tuple[str, str] | None = None) -> None:
        """`log_to`: (the run folder, this process's name) for its library output."""
        from mrm_ray.rl.policy import Policy

        if log_to is not None:
            _route_logs(*log_to)
        _threads(cpus)
        self.policy = Policy(policy_path, dtype=dtype, device=device, max_pixels=max_pixels)
        self.version = -1

    def ping(self) -> bool:
        return True

    def set_weights(self, version: int, state: dict) -> int:
        self.policy.model.load_state_dict(state)
        self.version = version
        return version

    def rollout(self, prompt: dict, *, n: int, seed: int, version: int, max_new_tokens: int, temperature: float,
                top_p: float) -> dict:
        """n responses to one prompt with the weights of `version` (refused if they are not loaded)."""
        if version != self.version:
            raise RuntimeError(f"rollout for policy version {version}, but this worker holds {self.version}")
        start = time.perf_counter()
        features = self.policy.prompt_features(prompt)
        torch.manual_seed(seed)
        responses = self.policy.sample(features, n, max_new_tokens=max_new_tokens, temperature=temperature,
                                       top_p=top_p)
        return {"prompt_id": prompt["id"], "responses": responses,
                "texts": [self.policy.decode(r) for r in responses], "seconds": time.perf_counter() - start}


class Learner:
    def __init__(self, cfg: dict, *, checkpoint: str | None, device: str) -> None:
        """`checkpoint`: the run folder's entry to resume from (`checkpoints/step-N`), fetched from the bucket
        for a run in object storage."""
        import copy

        from mrm_ray.config import GRPOConfig, validate
        from mrm_ray.rl.policy import Policy
        from mrm_ray.run_folder import RunFolder

        self.cfg = validate(GRPOConfig, cfg)
        self.folder = RunFolder(self.cfg.location)
        _route_logs(self.cfg.location, "learner")
        _threads(self.cfg.learner_cpus)
        torch.manual_seed(self.cfg.seed)
        if checkpoint:
            self.folder.pull(checkpoint)
            checkpoint = str(self.folder.local / checkpoint)
        # float32 master weights (a 1e-6 step is below bf16's resolution); bf16 autocast on a GPU
        self.policy = Policy(checkpoint or cfg["policy"], dtype="float32", device=device,
                             max_pixels=self.cfg.max_pixels)
        self.autocast = device.startswith("cuda") and self.cfg.dtype == "bfloat16"
        # the reference is the starting policy, also after a resume
        start = Policy(cfg["policy"], dtype="float32", device=device, max_pixels=self.cfg.max_pixels) \
            if checkpoint else None
        self.reference = copy.deepcopy((start or self.policy).model).eval().requires_grad_(False)
        o = self.cfg.optim
        self.optimizer = torch.optim.AdamW(self.policy.model.parameters(), lr=o.learning_rate,
                                           weight_decay=o.weight_decay)
        self.step = 0
        if checkpoint:
            self.optimizer.load_state_dict(torch.load(Path(checkpoint) / "optimizer.pt", weights_only=True))
            self.step = json.loads((Path(checkpoint) / "learner_state.json").read_text())["step"]

    def ping(self) -> bool:
        return True

    def state(self) -> tuple[int, dict]:
        return self.step, {k: v.detach().cpu() for k, v in self.policy.model.state_dict().items()}

    def _precision(self):
        import contextlib

        return torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()

    def update(self, prompts: list[dict], groups: list[dict], rewards: list[list[float]],
               keep: list[list[bool]] | None = None) -> dict:
        """One GRPO step over `groups` (one per prompt, G responses each) with their rewards; a rollout whose
        `keep` is False gets zero advantage (its group's statistics still count it)."""
        with self._precision():
            return self._update(prompts, groups, rewards, keep)

    def _update(self, prompts: list[dict], groups: list[dict], rewards: list[list[float]],
                keep: list[list[bool]] | None) -> dict:
        o, g = self.cfg.optim, self.cfg.rollout.group_size
        temperature = self.cfg.rollout.temperature
        policy = self.policy
        batches = []
        for prompt, group in zip(prompts, groups):
            batches.append(policy.group_batch(policy.prompt_features(prompt), group["responses"]))
        reward_t = torch.tensor([r for group in rewards for r in group], dtype=torch.float32)
        advantages = group_advantages(reward_t, g, scale=o.scale_advantages).view(len(batches), g)
        if keep is not None:
            advantages = advantages * torch.tensor(keep, dtype=torch.float32)
        with torch.no_grad():  # the behaviour policy's (= this policy before the update) and the reference's
            policy.model.eval()
            old = [policy.logprobs(b, temperature=temperature) for b in batches]
            ref = [policy.logprobs(b, temperature=temperature, model=self.reference) for b in batches]
        policy.model.train()
        order = np.random.default_rng(self.cfg.seed + self.step).permutation(len(batches))
        minibatches = [m for m in np.array_split(order, min(o.minibatches, len(batches))) if len(m)]
        totals = {"loss": 0.0, "pg_loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "grad_norm": 0.0}
        for mb in minibatches:
            self.optimizer.zero_grad(set_to_none=True)
            for i in mb:
                out = grpo_loss(policy.logprobs(batches[i], temperature=temperature), old[i], ref[i], advantages[i],
                                batches[i]["response_mask"], clip_eps=o.clip_eps, kl_coef=o.kl_coef)
                (out.loss / len(mb)).backward()
                for key in ("pg_loss", "kl", "clip_fraction"):
                    totals[key] += getattr(out, key) / len(batches)
                totals["loss"] += float(out.loss.detach()) / len(batches)
            norm = torch.nn.utils.clip_grad_norm_(policy.model.parameters(), o.max_grad_norm)
            totals["grad_norm"] += float(norm) / len(minibatches)
            self.optimizer.step()
        policy.model.eval()
        self.step += 1
        groups_r = reward_t.view(-1, g)
        lengths = [len(r) for group in groups for r in group["responses"]]
        ended = [int(len(r) and r[-1] == policy.end_id) for group in groups for r in group["responses"]]
        return {**totals, "response_length": float(np.mean(lengths)), "ended_fraction": float(np.mean(ended)),
                "zero_variance_groups": float((groups_r.std(dim=1) == 0).float().mean()),
                "advantage_abs": float(advantages.abs().mean()),
                "finite": bool(math.isfinite(totals["loss"]))}

    def save(self, step: int) -> str:
        """A resumable checkpoint in the run folder, `checkpoints/step-N` (uploaded for a run in object storage):
        the policy as a Hugging Face dir, optimizer state and step, and the run's config."""
        from mrm_ray.atomic import atomic_dir

        name = f"checkpoints/step-{step}"
        with atomic_dir(self.folder.local / name) as tmp:
            self.policy.model.save_pretrained(tmp, safe_serialization=True)
            self.policy.encoder.processor.save_pretrained(tmp)
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "learner_state.json").write_text(json.dumps({"step": self.step}) + "\n")
            self.folder.write_config(self.cfg, tmp)
        self.folder.push(name, last="learner_state.json")
        return name
