"""The GRPO driver: rollouts on Ray actors, rewards from the served ensemble, learner updates.

Each step: the step's prompts go to the rollout workers (one task per prompt, G responses
each); as each group finishes its rewards are requested from the reward service (several
calls in flight, see reward_service.py) while other groups are still being sampled; the
learner takes all groups and rewards, updates, and its new weights go to every worker as
one object-store object. Every `eval_every` steps the held-out prompts are sampled with a
fixed seed and scored: the reward curve in summary.json. The run folder (run_folder.py,
local or s3://) holds the config, metrics.jsonl and TensorBoard, the quarantined prompt
rows, the checkpoints, summary.json and every process's log; one progress line per step
goes to the console. A reward service that stays down stops the job after saving a
checkpoint; running the same command again resumes from the latest checkpoint.

What is optimised and what is measured are kept apart (over-optimisation shows as the first
rising while the second falls): every step logs the optimised reward (`reward/mean`), the
`reward.gold` reward where one is set (`reward/gold`, over the rollouts whose prompt has a
reference; the others are counted in `reward/gold_missing`, never scored 0), the members'
mean disagreement and each member's mean score (drift), and the policy's KL to its starting
point (`policy/kl`, the learner's reference is the starting policy). summary.json holds these
as per-step `curves`. With `reward.max_disagreement`, rollouts whose members disagree past it
get zero advantage (`reward/filtered`).

How much of a step waits on rewards is measured every step (`step_timing`): `time/reward_wait_fraction`
is the share of the step spent after the last group was sampled, waiting for rewards still in flight;
`time/reward_hidden_fraction` is the share of the reward span (first request to last answer) that ran
while groups were still being sampled, i.e. off the critical path.
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path

import numpy as np

from mrm_ray.config import GRPOConfig, to_dict
from mrm_ray.model import checkpoints
from mrm_ray.references import is_tiny
from mrm_ray.rewards import rule_reward
from mrm_ray.rl.reward_service import RewardService, RewardServiceDown
from mrm_ray.run_folder import LOG_DIR, SUMMARY, RunFolder

CHECKPOINTS = "checkpoints"
CURVE = f"{CHECKPOINTS}/curve.json"  # beside the checkpoints: a resumed run continues it
TRAIN_CURVE = f"{CHECKPOINTS}/train_curve.json"  # every step's CURVE_KEYS, kept the same way
# the per-step figures summary.json's `curves` holds (with every reward/member/NAME)
CURVE_KEYS = ("reward/mean", "reward/gold", "reward/gold_missing", "reward/disagreement", "reward/filtered",
              "policy/kl", "policy/response_length", "time/step_s", "time/reward_wait_fraction",
              "time/reward_hidden_fraction")
GOLD = {"rule": rule_reward}  # reward.gold -> (response, reference) -> reward


@dataclasses.dataclass
class GRPOSummary:
    run_dir: str  # the run folder: a local path or a URI
    steps: int
    checkpoint: str
    curve: list[dict]
    reward_key: str
    first: float
    last: float
    stopped: str | None = None
    curves: dict[str, list] = dataclasses.field(default_factory=dict)  # per step: "step" and CURVE_KEYS

    @property
    def rise(self) -> float:
        return self.last - self.first

    @property
    def rise_in_standard_errors(self) -> float:
        """The rise over the standard error of the first point's mean (same prompts and seed at every point)."""
        sem = self.curve[0].get("sem", 0.0) if self.curve else 0.0
        return self.rise / sem if sem > 0 else float("inf")


def saved_steps(folder: RunFolder) -> list[int]:
    """The steps of the run's checkpoints, oldest first (in the bucket for a run in object storage)."""
    return sorted(int(name.split("-")[1]) for name in folder.listing(CHECKPOINTS) if name.startswith("step-"))


def resolve_policy(cfg: GRPOConfig) -> GRPOConfig:
    """A tiny policy (references.py) -> the local tiny checkpoint it names, built once (the one the training job
    also uses), so that every actor reads the same files."""
    if not is_tiny(cfg.policy):
        return cfg
    return dataclasses.replace(cfg, policy=str(checkpoints.resolve(cfg.policy, want=checkpoints.BACKBONE)))


def check_prompts(policy: str, prompts: list[dict]) -> None:
    """Refuse, before any actor starts, prompts with images for a text-only policy."""
    family = checkpoints.reference_family(policy)
    if family is None or family.vision:
        return
    if shown := sum(bool(p["images"]) for p in prompts):
        raise ValueError(f"the policy {policy} is a text-only model and {shown} of the {len(prompts)} prompts show "
                         "images: give it text prompts (for the synthetic ones, prompts.task=colour_text)")


def progress_line(step: int, total: int, m: dict) -> str:
    """The driver's line for one step: rewards (served, per member, disagreement), KL, lengths, time."""
    members = " ".join(f"{k.split('/', 2)[2]} {v:+.3f}" for k, v in m.items() if k.startswith("reward/member/"))
    served = f" | served {m['reward/served_mean']:+.3f} ({members}; disagreement {m['reward/disagreement']:.3f})" \
        if "reward/served_mean" in m else ""
    gold = f" | gold {m['reward/gold']:.3f}" if "reward/gold" in m else ""
    filtered = f" | filtered {m['reward/filtered']:.0f}" if m.get("reward/filtered") else ""
    return (f"[grpo] step {step}/{total} | reward {m['reward/mean']:.3f}±{m['reward/std']:.3f}{served}{gold}{filtered} | "
            f"kl {m['policy/kl']:.4f} | len {m['policy/response_length']:.1f} | rollout "
            f"{m['time/rollout_s']:.1f}s reward wait {m['time/reward_wait_s']:.1f}s "
            f"({m.get('time/reward_wait_fraction', 0.0):.0%} of the step; call "
            f"{m['time/reward_call_s']:.2f}s) update {m['time/update_s']:.1f}s")


def step_timing(*, start: float, first_submit: float | None, sampled: float, rewarded: float, updated: float,
                end: float) -> dict:
    """A step's time figures from its clock readings (perf_counter): sampling, the wait for rewards after the
    last group was sampled, the update (+ weight push), and how much of the reward work was hidden behind
    sampling (1.0 when every reward came back before sampling ended; no reward calls: 1.0, nothing waited)."""
    step = max(end - start, 1e-9)
    wait = rewarded - sampled
    span = rewarded - first_submit if first_submit is not None else 0.0
    hidden = min(1.0, max(0.0, (sampled - first_submit) / span)) if span > 0 else 1.0
    return {"time/rollout_s": sampled - start, "time/reward_wait_s": wait, "time/update_s": updated - rewarded,
            "time/step_s": end - start, "time/reward_wait_fraction": wait / step,
            "time/reward_hidden_fraction": hidden}


def _items(prompt: dict, texts: list[str]) -> list[dict]:
    return [{"prompt": prompt["prompt"], "images": prompt["images"], "response": t, "reference": prompt.get("answer")}
            for t in texts]


def gold_rewards(gold: str | None, items: list[dict]) -> list[float | None]:
    """The `reward.gold` reward of each item, None where it cannot be computed (no reference answer)."""
    if gold is None:
        return [None] * len(items)
    return [GOLD[gold](it["response"], it["reference"]) if it.get("reference") is not None else None
            for it in items]


def _gold_metrics(gold: list[float | None]) -> dict:
    known = [g for g in gold if g is not None]
    return ({"reward/gold": float(np.mean(known))} if known else {}) | {"reward/gold_missing": len(gold) - len(known)}


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
        self.folder = folder = RunFolder(cfg.location)
        folder.route_logs("driver")
        folder.write_config(cfg)
        self.train, self.held = load_prompts(cfg, folder)
        check_prompts(cfg.policy, self.train + self.held)
        self.service = RewardService(cfg.reward, cfg.reward.url)
        steps = saved_steps(folder)
        resume = f"{CHECKPOINTS}/step-{steps[-1]}" if steps else None
        device = "cuda" if cfg.learner_gpus else "cpu"
        self.learner = ray.remote(Learner).options(num_cpus=cfg.learner_cpus, num_gpus=cfg.learner_gpus).remote(
            dataclasses.asdict(cfg), checkpoint=resume, device=device)
        r = cfg.rollout
        self.workers = [ray.remote(RolloutWorker).options(num_cpus=r.cpus_per_worker, num_gpus=r.gpus_per_worker)
                        .remote(cfg.policy, dtype=cfg.dtype, max_pixels=cfg.max_pixels, cpus=r.cpus_per_worker,
                                device="cuda" if r.gpus_per_worker else "cpu", log_to=(folder.location, f"rollout{i}"))
                        for i in range(r.workers)]
        self._wait_scheduled()
        self.version = self._push_weights()
        self.start_step = self.version
        if resume:
            print(f"[grpo] resumed from {folder.uri(resume)} at step {self.start_step}/{cfg.steps}", flush=True)
        self.log = folder.metrics(tracking=cfg.tracking, name=cfg.name, params=to_dict(cfg))
        self.curve = self._load_curve(CURVE) if resume else []
        self.train_curve = self._load_curve(TRAIN_CURVE) if resume else []

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
            point["disagreement"] = float(np.mean([r["std"] for r in results]))
        if self.cfg.reward.gold is not None:
            items = [it for p, g in zip(self.held, groups) for it in _items(p, g["texts"])]
            gold = _gold_metrics(gold_rewards(self.cfg.reward.gold, items))
            point |= {"gold_reward": gold.get("reward/gold"), "gold_missing": gold["reward/gold_missing"]}
        self.curve.append(point)
        self.log.event("eval", step, {k: v for k, v in point.items() if k != "step"}, scalars="eval")
        self.log.flush()
        gold = f" | gold {point['gold_reward']:.4f}" if point.get("gold_reward") is not None else ""
        print(f"[eval] step {step} | held-out {key} {value:+.4f}{gold}", flush=True)
        return point

    def save(self, step: int) -> str:
        """The learner's checkpoint of `step` (written and uploaded by the learner itself) and the curve so far;
        the two latest checkpoints are kept."""
        import ray

        name = ray.get(self.learner.save.remote(step))
        self.folder.write_json(CURVE, self.curve)
        self.folder.write_json(TRAIN_CURVE, self.train_curve)
        for old in saved_steps(self.folder)[:-2]:
            self.folder.remove(f"{CHECKPOINTS}/step-{old}")
        return self.folder.uri(name)

    def _load_curve(self, name: str) -> list[dict]:
        """A curve saved beside the checkpoint resumed from (its steps after it are run again)."""
        import json

        self.folder.pull(name)
        path = self.folder.local / name
        return [p for p in json.loads(path.read_text()) if p["step"] <= self.start_step] if path.is_file() else []

    # -------------------------------------------------------------------------- a step
    def train_step(self, step: int) -> dict:
        import ray

        cfg, r = self.cfg, self.cfg.rollout
        prompts = random.Random(cfg.seed * 7919 + step).sample(self.train, min(r.prompts_per_step, len(self.train)))
        start = time.perf_counter()
        reward_futures: dict[int, object] = {}
        first_submit: list[float] = []

        def score(i: int, group: dict) -> None:  # while the other groups are still being sampled
            first_submit.append(time.perf_counter())
            reward_futures[i] = self.service.submit(_items(prompts[i], group["texts"]))

        groups = self._generate(prompts, n=r.group_size, seed=cfg.seed * 1_000_003 + step, on_group=score)
        sampled = time.perf_counter()
        results = [reward_futures[i].result() for i in range(len(prompts))]  # RewardServiceDown propagates
        rewarded = time.perf_counter()
        limit = cfg.reward.max_disagreement
        keep = [[limit is None or x["std"] <= limit for x in res] for res in results]
        update = ray.get(self.learner.update.remote(prompts, groups, [[x["reward"] for x in res] for res in results],
                                                    keep=keep))
        if not update["finite"]:
            raise RuntimeError(f"step {step}: the loss is not finite ({update['loss']}); lower optim.learning_rate")
        self.version = self._push_weights()
        timing = step_timing(start=start, first_submit=min(first_submit) if first_submit else None, sampled=sampled,
                             rewarded=rewarded, updated=time.perf_counter(), end=time.perf_counter())
        flat = [x for res in results for x in res]
        items = [it for p, g in zip(prompts, groups) for it in _items(p, g["texts"])]
        m = {**_reward_metrics(flat), **timing,
             "time/rollout_sample_s": float(np.mean([g["seconds"] for g in groups]))}
        if cfg.reward.gold is not None:
            m |= _gold_metrics(gold_rewards(cfg.reward.gold, items))
        if limit is not None:
            m["reward/filtered"] = sum(not k for row in keep for k in row)
        m.update({f"policy/{k}": v for k, v in update.items() if k != "finite"})
        self.log.event("train", step, m, scalars="")
        self.train_curve.append({"step": step, **{k: v for k, v in m.items()
                                                  if k in CURVE_KEYS or k.startswith("reward/member/")}})
        print(progress_line(step, cfg.steps, m), flush=True)
        return m

    def run(self) -> GRPOSummary:
        cfg = self.cfg
        stopped = None
        try:
            try:
                if not self.curve:
                    self.evaluate(self.start_step)
                for step in range(self.start_step + 1, cfg.steps + 1):
                    try:
                        self.train_step(step)
                    except RewardServiceDown as exc:
                        saved = self.save(step - 1)
                        stopped = (f"{exc}. Step {step} was not applied; the run is saved at {saved} (step "
                                   f"{step - 1}). Bring the reward service back and run the same command again to "
                                   "resume.")
                        print(f"[grpo] STOPPED: {stopped}", flush=True)
                        break
                    if step % cfg.eval_every == 0 or step == cfg.steps:
                        self.evaluate(step)
                    if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                        self.save(step)
            finally:
                self.service.close()
                self.folder.push(LOG_DIR)
            summary = self._summary(stopped)
            if cfg.tracking.artifacts:  # where tracked: the summary and the last policy checkpoint
                self.log.artifact(self.folder.local / SUMMARY, kind="report")
                last = self.folder.local / CHECKPOINTS / Path(summary.checkpoint).name if summary.checkpoint else None
                if last is not None and last.is_dir():
                    self.log.artifact(last, kind="model")
            return summary
        finally:
            self.log.close()

    def _summary(self, stopped: str | None) -> GRPOSummary:
        key = "rule_reward" if self.curve and "served_reward" not in self.curve[0] else "served_reward"
        steps = saved_steps(self.folder)
        summary = GRPOSummary(run_dir=self.folder.location, steps=self.curve[-1]["step"] if self.curve else 0,
                              checkpoint=self.folder.uri(f"{CHECKPOINTS}/step-{steps[-1]}") if steps else "",
                              curve=self.curve, reward_key=key,
                              first=self.curve[0][key] if self.curve else float("nan"),
                              last=self.curve[-1][key] if self.curve else float("nan"), stopped=stopped,
                              curves=curves(self.train_curve))
        waits = {k: float(np.mean([p[k] for p in self.train_curve if p.get(k) is not None]))
                 for k in ("time/reward_wait_fraction", "time/reward_hidden_fraction")
                 if any(p.get(k) is not None for p in self.train_curve)}
        self.folder.write_json(SUMMARY, {**dataclasses.asdict(summary), "rise": summary.rise,
                                         "rise_in_standard_errors": summary.rise_in_standard_errors,
                                         "mean_over_steps": waits})
        return summary


def curves(points: list[dict]) -> dict[str, list]:
    """Per-step points -> {"step": [...], name: [...]} over every name any point has (None where a step has none)."""
    names = sorted({k for p in points for k in p if k != "step"})
    return {"step": [p["step"] for p in points], **{n: [p.get(n) for p in points] for n in names}}


def run_grpo(cfg: GRPOConfig) -> GRPOSummary:
    return GRPORun(cfg).run()
