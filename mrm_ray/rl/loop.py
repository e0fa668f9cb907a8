"""The GRPO driver: rollouts on Ray actors, rewards from the served ensemble, learner updates.

Each step: the step's prompts go to the rollout workers (one task per prompt, G responses
each); as each group finishes its rewards are requested from the reward service (several
calls in flight, see reward_service.py) while other groups are still being sampled; the
learner takes all groups and rewards, updates, and its new weights go to every worker as
one object-store object. Every `eval_every` steps the held-out prompts are sampled with a
fixed seed and scored: the reward curve in summary.json. Metrics go to TensorBoard and to
one progress line per step. A reward service that stays down stops the job after saving a
checkpoint; running the same command again resumes from the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np

from mrm_ray.atomic import atomic_file
from mrm_ray.rl.config import GRPOConfig
from mrm_ray.rl.reward_service import RewardService, RewardServiceDown

CHECKPOINTS = "checkpoints"


@dataclasses.dataclass
class GRPOSummary:
    run_dir: str
    steps: int
    checkpoint: str
    curve: list[dict]
    reward_key: str
    first: float
    last: float
    stopped: str | None = None

    @property
    def rise(self) -> float:
        return self.last - self.first

    @property
    def rise_in_standard_errors(self) -> float:
        """The rise over the standard error of the first point's mean (same prompts and seed at every point)."""
        sem = self.curve[0].get("sem", 0.0) if self.curve else 0.0
        return self.rise / sem if sem > 0 else float("inf")


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / CHECKPOINTS).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def resolve_policy(cfg: GRPOConfig) -> GRPOConfig:
    """`policy: tiny` -> the tiny random Qwen2.5-VL the training job also uses (built once)."""
    from mrm_ray.config import is_tiny
    from mrm_ray.model.tiny import shared_tiny_checkpoint

    if not is_tiny(cfg.policy):
        return cfg
    return dataclasses.replace(cfg, policy=str(shared_tiny_checkpoint(cfg.output_dir, cfg.policy)))


def check_prompts(policy: str, prompts: list[dict]) -> None:
    """Refuse, before any actor starts, prompts with images for a text-only policy."""
    import json

    from mrm_ray.model.families import family_of

    config = Path(policy) / "config.json"
    if not config.is_file() or family_of(json.loads(config.read_text())).vision:
        return
    if shown := sum(bool(p["images"]) for p in prompts):
        raise ValueError(f"the policy {policy} is a text-only model and {shown} of the {len(prompts)} prompts show "
                         "images: give it text prompts (for the synthetic ones, prompts.task=colour_text)")


class Metrics:
    """TensorBoard scalars and the driver's progress line."""

    def __init__(self, run_dir: Path, total: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        self.total = total

    def step(self, step: int, m: dict) -> None:
        for key, value in m.items():
            if isinstance(value, (int, float)) and value == value:
                self.writer.add_scalar(key, value, step)
        members = " ".join(f"{k.split('/', 2)[2]} {v:+.3f}" for k, v in m.items() if k.startswith("reward/member/"))
        served = f" | served {m['reward/served_mean']:+.3f} ({members}; disagreement {m['reward/disagreement']:.3f})" \
            if "reward/served_mean" in m else ""
        print(f"[grpo] step {step}/{self.total} | reward {m['reward/mean']:.3f}±{m['reward/std']:.3f}{served} | "
              f"kl {m['policy/kl']:.4f} | len {m['policy/response_length']:.1f} | rollout "
              f"{m['time/rollout_s']:.1f}s reward wait {m['time/reward_wait_s']:.1f}s (call "
              f"{m['time/reward_call_s']:.2f}s) update {m['time/update_s']:.1f}s", flush=True)

    def evaluated(self, step: int, value: float, key: str) -> None:
        self.writer.add_scalar(f"eval/{key}", value, step)
        self.writer.flush()
        print(f"[eval] step {step} | held-out {key} {value:+.4f}", flush=True)

    def close(self) -> None:
        self.writer.close()


def _items(prompt: dict, texts: list[str]) -> list[dict]:
    return [{"prompt": prompt["prompt"], "images": prompt["images"], "response": t, "reference": prompt.get("answer")}
            for t in texts]


def _reward_metrics(results: list[dict]) -> dict:
    rewards = np.array([r["reward"] for r in results], dtype=np.float64)
    out = {"reward/mean": float(rewards.mean()), "reward/std": float(rewards.std())}
    served = [r["model_reward"] for r in results if r.get("model_reward") is not None]
    if served:
        out["reward/served_mean"] = float(np.mean(served))
        out["reward/disagreement"] = float(np.mean([r["std"] for r in results]))
        for name in sorted({k for r in results for k in r["scores"]}):
            out[f"reward/member/{name}"] = float(np.mean([r["scores"][name] for r in results if name in r["scores"]]))
        out["reward/matched_reference"] = float(np.mean([bool(r.get("matched_reference")) for r in results]))
    out["time/reward_call_s"] = float(np.mean([r["latency_s"] for r in results]))
    return out


class GRPORun:
    """One run: its actors, reward service and metrics (see the module docstring)."""

    def __init__(self, cfg: GRPOConfig) -> None:
        import ray

        from mrm_ray.rl.actors import Learner, RolloutWorker
        from mrm_ray.rl.prompts import load_prompts

        self.cfg = cfg = resolve_policy(cfg)
        self.run_dir = cfg.run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.train, self.held = load_prompts(cfg, self.run_dir)
        check_prompts(cfg.policy, self.train + self.held)
        self.service = RewardService(cfg.reward, cfg.reward.url)
        resume = latest_checkpoint(self.run_dir)
        device = "cuda" if cfg.learner_gpus else "cpu"
        self.learner = ray.remote(Learner).options(num_cpus=cfg.learner_cpus, num_gpus=cfg.learner_gpus).remote(
            dataclasses.asdict(cfg), checkpoint=str(resume) if resume else None, device=device)
        r = cfg.rollout
        self.workers = [ray.remote(RolloutWorker).options(num_cpus=r.cpus_per_worker, num_gpus=r.gpus_per_worker)
                        .remote(cfg.policy, dtype=cfg.dtype, max_pixels=cfg.max_pixels, cpus=r.cpus_per_worker,
                                device="cuda" if r.gpus_per_worker else "cpu") for _ in range(r.workers)]
        self._wait_scheduled()
        self.version = self._push_weights()
        self.start_step = self.version
        if resume:
            print(f"[grpo] resumed from {resume} at step {self.start_step}/{cfg.steps}", flush=True)
        self.metrics = Metrics(self.run_dir, cfg.steps)
        self.curve = self._load_curve() if resume else []

    # ------------------------------------------------------------------------ pieces
    def _wait_scheduled(self, every_s: float = 30.0) -> None:
        """Block until every actor runs, saying what is missing meanwhile (an autoscaler may add nodes)."""
        import ray

        cfg, r = self.cfg, self.cfg.rollout
        pending = [self.learner.ping.remote()] + [w.ping.remote() for w in self.workers]
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=every_s)
            if pending:
                print(f"[grpo] waiting for {len(pending)} actor(s) to be scheduled: the run needs "
                      f"{cfg.learner_cpus + r.workers * r.cpus_per_worker:g} CPUs and "
                      f"{cfg.learner_gpus + r.workers * r.gpus_per_worker:g} GPUs (learner_cpus, rollout.workers x "
                      f"rollout.cpus_per_worker, ...); available now: {ray.available_resources()}", flush=True)

    def _push_weights(self) -> int:
        import ray

        # the weights stay in the object store (one copy, read by every worker), never pass through the driver
        step_ref, state_ref = self.learner.state.options(num_returns=2).remote()
        step = ray.get(step_ref)
        ray.get([w.set_weights.remote(step, state_ref) for w in self.workers])
        return step

    def _generate(self, prompts: list[dict], *, n: int, seed: int, on_group=None) -> list[dict]:
        """Groups in prompt order; `on_group(i, group)` runs as each one finishes."""
        import ray

        r = self.cfg.rollout
        futures = {self.workers[i % len(self.workers)].rollout.remote(
            p, n=n, seed=seed * 100_003 + i, version=self.version, max_new_tokens=r.max_new_tokens,
            temperature=r.temperature, top_p=r.top_p): i for i, p in enumerate(prompts)}
        groups: list[dict | None] = [None] * len(prompts)
        pending = list(futures)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = futures[done[0]]
            groups[i] = ray.get(done[0])
            if on_group is not None:
                on_group(i, groups[i])
        return groups

    def evaluate(self, step: int) -> dict:
        """Mean reward of sampled responses to the held-out prompts (same seed every time)."""
        groups = self._generate(self.held, n=self.cfg.rollout.eval_samples, seed=10**6 + self.cfg.seed)
        served = self.cfg.reward.url is not None
        futures = [self.service.submit(_items(p, g["texts"]), served=served) for p, g in zip(self.held, groups)]
        results = [r for f in futures for r in f.result()]
        key = "served_reward" if served else "rule_reward"
        values = np.array([r["model_reward"] if served else r["reward"] for r in results], dtype=np.float64)
        value = float(values.mean())
        point = {"step": step, key: value, "sem": float(values.std(ddof=1) / np.sqrt(len(values))),
                 "responses": len(values)}
        if served:
            point["hybrid_or_rule_reward"] = float(np.mean([r["reward"] for r in results]))
        self.curve.append(point)
        self.metrics.evaluated(step, value, key)
        return point

    def save(self, step: int) -> Path:
        import ray

        out = self.run_dir / CHECKPOINTS / f"step-{step}"
        ray.get(self.learner.save.remote(str(out)))
        with atomic_file(out.parent / "curve.json", "w") as f:  # beside the checkpoints: the resumed run continues it
            json.dump(self.curve, f)
        for old in sorted((self.run_dir / CHECKPOINTS).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-2]:
            shutil.rmtree(old, ignore_errors=True)  # keep the last two
        return out

    def _load_curve(self) -> list[dict]:
        path = self.run_dir / CHECKPOINTS / "curve.json"
        return json.loads(path.read_text()) if path.is_file() else []

    # -------------------------------------------------------------------------- a step
    def train_step(self, step: int) -> dict:
        import ray

        cfg, r = self.cfg, self.cfg.rollout
        prompts = random.Random(cfg.seed * 7919 + step).sample(self.train, min(r.prompts_per_step, len(self.train)))
        start = time.perf_counter()
        reward_futures: dict[int, object] = {}

        def score(i: int, group: dict) -> None:  # while the other groups are still being sampled
            reward_futures[i] = self.service.submit(_items(prompts[i], group["texts"]))

        groups = self._generate(prompts, n=r.group_size, seed=cfg.seed * 1_000_003 + step, on_group=score)
        rollout_s = time.perf_counter() - start
        results = [reward_futures[i].result() for i in range(len(prompts))]  # RewardServiceDown propagates
        reward_wait_s = time.perf_counter() - start - rollout_s
        t = time.perf_counter()
        update = ray.get(self.learner.update.remote(prompts, groups, [[x["reward"] for x in res] for res in results]))
        update_s = time.perf_counter() - t
        if not update["finite"]:
            raise RuntimeError(f"step {step}: the loss is not finite ({update['loss']}); lower optim.learning_rate")
        self.version = self._push_weights()
        flat = [x for res in results for x in res]
        m = {**_reward_metrics(flat), "time/rollout_s": rollout_s, "time/reward_wait_s": reward_wait_s,
             "time/update_s": update_s, "time/rollout_sample_s": float(np.mean([g["seconds"] for g in groups]))}
        m.update({f"policy/{k}": v for k, v in update.items() if k != "finite"})
        self.metrics.step(step, m)
        return m

    def run(self) -> GRPOSummary:
        cfg = self.cfg
        stopped = None
        try:
            if not self.curve:
                self.evaluate(self.start_step)
            for step in range(self.start_step + 1, cfg.steps + 1):
                try:
                    self.train_step(step)
                except RewardServiceDown as exc:
                    saved = self.save(step - 1)
                    stopped = (f"{exc}. Step {step} was not applied; the run is saved at {saved} (step {step - 1}). "
                               "Bring the reward service back and run the same command again to resume.")
                    print(f"[grpo] STOPPED: {stopped}", flush=True)
                    break
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    self.evaluate(step)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self.save(step)
        finally:
            self.metrics.close()
            self.service.close()
        return self._summary(stopped)

    def _summary(self, stopped: str | None) -> GRPOSummary:
        key = ("served_reward" if "served_reward" in self.curve[0] else "rule_reward") if self.curve else "served_reward"
        latest = latest_checkpoint(self.run_dir)
        summary = GRPOSummary(run_dir=str(self.run_dir), steps=self.curve[-1]["step"] if self.curve else 0,
                              checkpoint=str(latest) if latest else "", curve=self.curve, reward_key=key,
                              first=self.curve[0][key] if self.curve else float("nan"),
                              last=self.curve[-1][key] if self.curve else float("nan"), stopped=stopped)
        with atomic_file(self.run_dir / "summary.json", "w") as f:
            json.dump({**dataclasses.asdict(summary), "rise": summary.rise,
                       "rise_in_standard_errors": summary.rise_in_standard_errors}, f, indent=2)
        return summary


def run_grpo(cfg: GRPOConfig) -> GRPOSummary:
    return GRPORun(cfg).run()
