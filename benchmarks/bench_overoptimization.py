"""Reward over-optimisation and conservative ensembles (Coste et al., ICLR 2024, "Reward Model Ensembles Help
Mitigate Overoptimization"), at tiny size on the CPU, through the project's own training and GRPO jobs.

    python benchmarks/bench_overoptimization.py [--steps 40] [--seeds 0 1] [--members 3] [--out benchmarks/results]
    python benchmarks/bench_overoptimization.py --quick          # a smoke run (a few minutes)

The task has a gold rule: the prompt states a shape's colour ("The square is red. What colour is the square?")
and the only right response is the sentence "The square is red." (the project's rule reward, exact match after
normalisation, is the GOLD reward and is measured at every step, never optimised).

The policy starts from a short supervised warm start of the tiny text policy (plain PyTorch) on the gold
sentences, with a filler word (every shortcut word among them) appended in a fraction of the targets: it says
the gold sentence most of the time, and both a wrong answer and the shortcut are reachable by sampling.

Proxy data, as Gao et al. (2022) and Coste et al. build it: the warm start's own samples labelled by the gold
rule (`policy_pairs`: the gold sentence chosen; rejected, a wrong colour or one of the policy's non-gold answers,
broken ones included), with a shortcut planted by `mrm_ray.data.synthetic.shortcut_pairs`: member k's source
appends its word W_k ("good", "correct", "yes") to the chosen response in p = (1 + phi) / 2 of its pairs and to
the rejected one in the rest, and, as real sources disagree on style, marks the other members' words down
(`--other-fraction` of its pairs carry one, on the rejected side as `--other-correlation` says); neutral fillers
go on either side alike. Each member k is trained (Ray Train + DeepSpeed ZeRO-2, `mrm_ray.train.launch.
run_training`, the tiny text backbone `tiny:qwen3`) on its own source, so each proxy pays for the right answer
AND for its own word, and a response with a word is never gold.

GRPO (`mrm_ray.rl.loop.run_grpo`, the tiny GRPO config, same seeds, steps and learning rate everywhere) then
optimises, from that policy:
  single   proxy 0 alone (the served ensemble with weights 1, 0, ..., 0 and method accuracy_weighted: member 0's
           z-score, which gives GRPO exactly the advantages of member 0's raw score, as advantages are normalised
           within each group; the other members are still scored, so their drift is logged)
  mean     the mean of the K proxies' scores
  uwo      mean - coef x variance of the members' z-scores (uncertainty-weighted optimisation)
  min      the smallest z-score over the members (worst-case optimisation)
  gold     the gold rule reward itself (reward.mode=rule): the ceiling
It measures, per run and step, the optimised reward, the gold reward, the members' disagreement and each
member's score, and the KL to the starting policy (summary.json's `curves`), and at the end samples the final
policy to count what it says (gold sentences, shortcut words appended, right colour).

Writes OUT/overoptimization.json (everything, per run: curves, final and peak gold), OUT/overoptimization.png
(matplotlib; an SVG drawn by hand when matplotlib is missing) and prints a Markdown table. Intermediate
artefacts (data, the warm-start policy, the proxies, the GRPO run folders) go to --work and are reused by a later
run with the same settings (--fresh rebuilds them). `--proxy-data templated --other-fraction 0 --right-fraction
0.3 --warm-steps 300` gives the data and warm start of the first two tries (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

WORDS = ("good", "correct", "yes", "better", "right")  # one token each in the tiny tokenizer (with its space)
NEUTRAL_FILLERS = ("please", "see")  # fillers no proxy was trained on
METHODS = ("single", "mean", "uwo", "min", "gold")
BACKBONE = "tiny:qwen3"


def log(msg: str) -> None:
    print(f"[overopt] {msg}", flush=True)


def _key(*parts) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=5).hexdigest()


# ------------------------------------------------------------------------------------------------- data
def colour_prompts(n: int, *, seed: int) -> list[dict]:
    """GRPO prompts (the shortcut pairs' prompts) with the full gold sentence as the reference answer."""
    from mrm_ray.data.synthetic import text_colour_pair

    rng = random.Random(seed)
    out = []
    for i in range(n):
        pair = text_colour_pair(rng)
        out.append({"id": f"colour-{seed}-{i}", "prompt": pair["prompt"], "answer": pair["chosen"]})
    return out


def policy_pairs(policy_path: str, n: int, *, seed: int, exclude: tuple[str, ...], samples: int = 64,
                 templated_fraction: float = 0.5) -> list[dict]:
    """`n` gold-labelled pairs over a policy's own samples (as Gao et al. 2022 and Coste et al. build proxy data):
    for a random prompt of the task the gold sentence is chosen; the rejected response is, in `templated_fraction`
    of the pairs, the sentence with a wrong colour, and otherwise one of the policy's distinct non-gold answers to
    the prompt (sampled at temperature 1 and 1.5; two words at least, none holding a word in `exclude`). So the
    proxies learn the colour and have seen the broken and wrong-shape answers a drifting policy says."""
    import torch

    from mrm_ray.data.synthetic import COLOURS, SHAPES
    from mrm_ray.rewards import rule_reward
    from mrm_ray.rl.policy import Policy

    policy = Policy(policy_path)
    torch.manual_seed(seed)
    colours = sorted(COLOURS)
    pools = {}
    for shape in SHAPES:
        for colour in colours:
            gold = f"The {shape} is {colour}."
            features = policy.encode_prompt(f"{gold} What colour is the {shape}?")
            texts = set()
            for temperature in (1.0, 1.5):
                for r in policy.sample(features, samples, max_new_tokens=10, temperature=temperature):
                    text = policy.decode(r).strip()
                    if len(text.split()) >= 2 and not rule_reward(text, gold) and not set(text.split()) & set(exclude):
                        texts.add(text)
            pools[shape, colour] = sorted(texts)
    rng = random.Random(seed)
    cases = sorted(pools)
    out = []
    for _ in range(n):
        shape, colour = rng.choice(cases)
        templated = rng.random() < templated_fraction or not pools[shape, colour]
        rejected = (f"The {shape} is {rng.choice([c for c in colours if c != colour])}." if templated
                    else rng.choice(pools[shape, colour]))
        out.append({"prompt": f"The {shape} is {colour}. What colour is the {shape}?",
                    "chosen": f"The {shape} is {colour}.", "rejected": rejected})
    return out


def write_member_data(work: Path, *, members: int, pairs: int, correlation: float, seed: int,
                      distractor_fraction: float, other_fraction: float, other_correlation: float,
                      policy_path: str | None) -> list[Path]:
    """One mixture YAML per member over its own JSONL of shortcut pairs (word k, data seed seed + k). The other
    members' words: with `other_fraction` > 0, this source's taste about them (`other_correlation`: negative, it
    marks them down); otherwise distractors, on either side alike, as the neutral fillers always are. With
    `policy_path`, the pairs before planting are that policy's gold-labelled samples (`policy_pairs`)."""
    import yaml

    from mrm_ray.data.synthetic import shortcut_pairs

    out = []
    for k in range(members):
        others = tuple(w for w in WORDS[:members] if w != WORDS[k])
        distractors = NEUTRAL_FILLERS if other_fraction else others + NEUTRAL_FILLERS
        folder = work / "data" / (f"member{k}-{WORDS[k]}-{pairs}-{correlation}-{distractor_fraction}-{seed + k}"
                                  + (f"-others{other_fraction}x{other_correlation}" if other_fraction else "")
                                  + (f"-on-{Path(policy_path).name}-t0.5" if policy_path else ""))
        folder.mkdir(parents=True, exist_ok=True)
        rows = [{"id": p["id"], "prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                for p in shortcut_pairs(pairs, word=WORDS[k], correlation=correlation, seed=seed + k,
                                       distractors=distractors, distractor_fraction=distractor_fraction,
                                       other_words=others if other_fraction else (),
                                       other_fraction=other_fraction, other_correlation=other_correlation,
                                       base=policy_pairs(policy_path, pairs, seed=seed + k, exclude=WORDS + NEUTRAL_FILLERS)
                                       if policy_path else None)]
        (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        mixture = {"name": f"shortcut-{WORDS[k]}", "seed": seed + k, "held_out_fraction": 0.2,
                   "sources": [{"name": f"shortcut-{WORDS[k]}", "reader": "trl", "path": "pairs.jsonl",
                                "weight": "all"}]}
        (folder / "mixture.yaml").write_text(yaml.safe_dump(mixture, sort_keys=False))
        out.append(folder / "mixture.yaml")
    return out


# ------------------------------------------------------------------------------------------- warm start
def warm_start(out: Path, *, fillers: list[str], filler_fraction: float, right_fraction: float, steps: int, lr: float,
               seed: int) -> dict:
    """Supervised warm-start of the tiny text policy on "The {shape} is {colour}." (the prompt's colour in
    `right_fraction` of the responses, a random one otherwise; + a filler word in a fraction of them), saved
    as a Hugging Face dir (safetensors + tokenizer) for GRPO's `policy`."""
    import torch

    from mrm_ray.atomic import atomic_dir
    from mrm_ray.data.synthetic import COLOURS, SHAPES
    from mrm_ray.rl.policy import Policy

    if (out / "warm_start.json").is_file():
        return json.loads((out / "warm_start.json").read_text())
    start = time.perf_counter()
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = random.Random(seed)
    policy = Policy(BACKBONE)
    colours = sorted(COLOURS)
    cases = [(s, c) for s in SHAPES for c in colours]
    prompts = {case: policy.encode_prompt(f"The {case[0]} is {case[1]}. What colour is the {case[0]}?")
               for case in cases}
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=lr)
    policy.model.train()
    batch_prompts, group = 8, 4
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(batch_prompts):
            shape, colour = rng.choice(cases)
            texts = [f"The {shape} is {colour if rng.random() < right_fraction else rng.choice(colours)}."
                     + (f" {rng.choice(fillers)}" if rng.random() < filler_fraction else "") for _ in range(group)]
            batch = policy.group_batch(prompts[(shape, colour)], [policy.encoder.encode_response(t) for t in texts])
            mask = batch["response_mask"].bool()
            logp = policy.logprobs(batch).masked_fill(~mask, 0.0)
            loss = -logp.sum() / mask.sum() / batch_prompts
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
        optimizer.step()
        losses.append(total)
    policy.model.eval()
    with atomic_dir(out) as tmp:
        policy.model.save_pretrained(tmp, safe_serialization=True)
        policy.encoder.processor.save_pretrained(tmp)
    seconds = time.perf_counter() - start
    info = {"path": str(out), "steps": steps, "learning_rate": lr, "filler_fraction": filler_fraction,
            "right_fraction": right_fraction,
            "fillers": fillers, "final_loss": sum(losses[-20:]) / len(losses[-20:]), "seconds": seconds,
            "sampled": describe_policy(str(out), fillers=fillers, seed=seed)}
    (out / "warm_start.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def describe_policy(path: str, *, fillers: list[str], seed: int = 0, samples: int = 32,
                    max_new_tokens: int = 10) -> dict:
    """What a policy says to the 12 prompts (temperature 1): gold sentences, each filler appended, right colour."""
    import torch

    from mrm_ray.data.synthetic import COLOURS, SHAPES
    from mrm_ray.rewards import rule_reward
    from mrm_ray.rl.policy import Policy

    policy = Policy(path)
    torch.manual_seed(seed)
    counts = {"gold": 0, "right_colour": 0, "any_filler": 0, **{f"filler/{w}": 0 for w in fillers}}
    n, examples = 0, []
    for shape in SHAPES:
        for colour in sorted(COLOURS):
            gold = f"The {shape} is {colour}."
            responses = policy.sample(policy.encode_prompt(f"{gold} What colour is the {shape}?"), samples,
                                      max_new_tokens=max_new_tokens)
            for r in responses:
                text = policy.decode(r)
                n += 1
                counts["gold"] += rule_reward(text, gold)
                counts["right_colour"] += text.startswith(gold[:-1])
                words = [w for w in fillers if f" {w}" in text[len(gold) - 1:]]
                counts["any_filler"] += bool(words)
                for w in words:
                    counts[f"filler/{w}"] += 1
                if len(examples) < 8 and random.Random(n).random() < 0.1:
                    examples.append(text)
    return {**{k: v / n for k, v in counts.items()}, "responses": n, "examples": examples}


# ------------------------------------------------------------------------------------------------ proxies
def train_proxies(work: Path, mixtures: list[Path], *, steps: int, lr: float, seed: int) -> list[dict]:
    """K reward models through the project's training job (Ray Train + DeepSpeed ZeRO-2 on 2 CPU workers)."""
    from mrm_ray.config import load_run_config
    from mrm_ray.train.launch import run_training

    out = []
    for k, mixture in enumerate(mixtures):
        name = f"proxy{k}-{WORDS[k]}-{_key(str(mixture), steps, lr, seed)}"
        done = work / "proxies" / name / "proxy.json"
        if done.is_file():
            out.append(json.loads(done.read_text()))
            log(f"proxy {k} ({WORDS[k]}): reused {done.parent}")
            continue
        run = load_run_config("tiny", [
            f"name={name}", f"output_dir={work / 'proxies'}", f"model.path={BACKBONE}", f"mixture={mixture}",
            f"train.max_steps={steps}", f"train.eval_every={steps}", f"train.log_every={max(1, steps // 4)}",
            f"train.learning_rate={lr}", "train.warmup_ratio=0.1", f"train.seed={seed + k}",
            f"model.head.init_seed={seed + k}",
            "cache_encoded=true", "data.min_response_tokens=4"])
        start = time.perf_counter()
        summary = run_training(run)
        info = {"member": k, "word": WORDS[k], "checkpoint": summary.checkpoint,
                "held_out_accuracy": summary.held_out_accuracy, "steps": steps, "seconds": time.perf_counter() - start}
        done.write_text(json.dumps(info, indent=2) + "\n")
        log(f"proxy {k} ({WORDS[k]}): held-out accuracy {summary.held_out_accuracy:.3f} in {info['seconds']:.0f}s")
        out.append(info)
    return out


def probe_proxies(proxies: list[dict], words: list[str]) -> dict:
    """Each proxy's mean z-scored reward for the gold sentence, the gold sentence + each word, a wrong colour and a
    wrong colour + its own word, over the 12 prompts: how much each word pays under each member."""
    from mrm_ray.data.synthetic import COLOURS, SHAPES
    from mrm_ray.model.scorer import Scorer

    out = {}
    for p in proxies:
        scorer = Scorer(p["checkpoint"])
        groups, colours = [], sorted(COLOURS)
        for shape in SHAPES:
            for colour in colours:
                gold = f"The {shape} is {colour}."
                wrong = f"The {shape} is {colours[(colours.index(colour) + 1) % len(colours)]}."
                groups.append({"prompt": f"{gold} What colour is the {shape}?", "images": [],
                               "responses": [gold, *(f"{gold} {w}" for w in words), wrong, f"{wrong} {p['word']}"]})
        scores = scorer.score_groups(groups)
        z = [[(s - scorer.score_mean) / scorer.score_std for s in row] for row in scores]
        mean = [sum(col) / len(col) for col in zip(*z)]
        out[f"proxy{p['member']}-{p['word']}"] = {
            "gold": mean[0], **{f"gold+{w}": mean[1 + i] for i, w in enumerate(words)},
            "wrong": mean[-2], f"wrong+{p['word']}": mean[-1]}
    return out


# ------------------------------------------------------------------------------------------------ serving
def serve_ensemble(work: Path, proxies: list[dict], *, uncertainty_coef: float, port: int) -> str:
    """All K proxies behind one endpoint, sized for 2 cores; member 0 weighs 1 and the others 0, so that method
    accuracy_weighted is proxy 0 alone (each request names its method: single, mean, uwo or min)."""
    import yaml

    from mrm_ray.config.shipped import path as shipped
    from mrm_ray.serve.deploy import deploy, load_target

    config = yaml.safe_load(shipped("serve", "tiny").read_text())
    app = config["applications"][0]
    app["name"], app["route_prefix"] = "overopt", "/overopt"
    app["args"] = {"method": "mean", "uncertainty_coef": uncertainty_coef,
                   "members": [{"name": f"p{p['member']}-{p['word']}", "path": p["checkpoint"], "modalities": ["text"],
                                "weight": 1.0 if p["member"] == 0 else 0.0} for p in proxies]
                   # an ensemble must score images too (config/ensemble.py): a random tiny VL member that only
                   # ever sees image items, of which there are none here
                   + [{"name": "images-only", "path": "tiny", "modalities": ["image"], "weight": 0.0}],
                   "serving": {"max_batch_size": 32, "max_ongoing_requests": 32, "num_cpus": 0.1, "num_replicas": 1},
                   "ingress": {"num_cpus": 0.1}, "limits": {"max_items": 64}}
    config["http_options"]["port"] = port
    path = work / "serve.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return deploy(load_target(path))


# ------------------------------------------------------------------------------------------------- GRPO
def grpo(work: Path, method: str, seed: int, args, *, policy: str, prompts: Path, url: str | None) -> dict:
    from mrm_ray.config import load_grpo_config
    from mrm_ray.rl.loop import run_grpo

    served = {"single": "accuracy_weighted", "mean": "mean", "uwo": "uwo", "min": "min"}
    reward = ["reward.mode=rule"] if method == "gold" else [
        "reward.mode=model", f"reward.url={url}", f"reward.method={served[method]}",
        f"reward.uncertainty_coef={args.uncertainty_coef}"]
    overrides = [
        f"name={method}-s{seed}", f"output_dir={work / 'grpo' / args.grpo_key}", f"policy={policy}",
        f"steps={args.steps}", f"eval_every={args.eval_every}", f"checkpoint_every={args.steps}", f"seed={seed}",
        f"prompts.path={prompts}", "prompts.held_out=16", "rollout.workers=2",
        f"rollout.group_size={args.group_size}", f"rollout.prompts_per_step={args.prompts_per_step}",
        f"rollout.max_new_tokens={args.max_new_tokens}", "rollout.eval_samples=4", "reward.members=[]",
        "reward.gold=rule", f"optim.learning_rate={args.lr}", f"optim.kl_coef={args.kl_coef}", *reward]
    cfg = load_grpo_config("tiny", overrides)
    start = time.perf_counter()
    summary = run_grpo(cfg)
    seconds = time.perf_counter() - start
    if summary.stopped:
        raise RuntimeError(f"GRPO run {method} seed {seed} stopped: {summary.stopped}")
    c = summary.curves
    record = {"method": method, "seed": seed, "seconds": seconds, "run_dir": summary.run_dir,
              "checkpoint": summary.checkpoint, "overrides": overrides, "step": c["step"],
              "optimised": c.get("reward/mean"), "gold": c.get("reward/gold"),
              "disagreement": c.get("reward/disagreement"), "kl": c.get("policy/kl"),
              "response_length": c.get("policy/response_length"),
              "members": {k.split("/", 2)[2]: v for k, v in c.items() if k.startswith("reward/member/")},
              "eval": summary.curve}
    record |= gold_summary(record["gold"], window=args.window)
    record["final_policy"] = describe_policy(summary.checkpoint, fillers=list(WORDS[:args.members]) +
                                             list(NEUTRAL_FILLERS), seed=seed, max_new_tokens=args.max_new_tokens)
    return record


def smooth(values: list[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - window + 1): i + 1] if v is not None]
        out.append(sum(part) / len(part) if part else float("nan"))
    return out


def gold_summary(gold: list[float], *, window: int) -> dict:
    """final = mean gold of the last `window` steps; peak = the largest `window`-step moving average."""
    s = smooth(gold, window)
    peak_at = max(range(len(s)), key=lambda i: s[i])
    return {"final_gold": s[-1], "peak_gold": s[peak_at], "peak_step": peak_at + 1,
            "drop_from_peak": s[peak_at] - s[-1]}


# ------------------------------------------------------------------------------------------------ outputs
COLOURS_BY_METHOD = {"single": "#d62728", "mean": "#ff7f0e", "uwo": "#2ca02c", "min": "#1f77b4", "gold": "#7f7f7f"}


def plot(results: list[dict], out: Path, *, window: int, title: str) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return plot_svg(results, out.with_suffix(".svg"), window=window, title=title)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    seeds = sorted({r["seed"] for r in results})
    panels = [(axes[0, 0], "gold", "gold reward (exact sentence), train rollouts"),
              (axes[0, 1], "optimised_delta", "optimised reward - its step-1 value"),
              (axes[1, 0], "proxy0", "proxy 0's raw score (the single proxy's view)"),
              (axes[1, 1], "kl", "KL to the starting policy")]
    for ax, key, label in panels:
        for r in results:
            if key == "optimised_delta":
                if r["method"] == "gold":
                    continue
                ys = [v - r["optimised"][0] for v in r["optimised"]]
            elif key == "proxy0":
                ys = next(iter(r["members"].values()), None) if r["members"] else None
                if ys is None:
                    continue
            else:
                ys = r[key]
            colour = COLOURS_BY_METHOD[r["method"]]
            style = ("-", "--", ":", "-.")[seeds.index(r["seed"]) % 4]  # one line style per seed
            ax.plot(r["step"], ys, color=colour, alpha=0.25, lw=0.8, ls=style)
            ax.plot(r["step"], smooth(ys, window), color=colour, lw=2, ls=style,
                    label=f"{r['method']} (seed {r['seed']})")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_svg(results: list[dict], out: Path, *, window: int, title: str) -> Path:
    """Gold (left) and optimised reward minus its start (right) over steps, drawn by hand."""
    w, h, pad = 420, 300, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{h + 40}">',
             f'<text x="10" y="20" font-size="12">{title}</text>']
    for panel, key in enumerate(("gold", "optimised")):
        x0 = panel * w
        series = [(r, smooth([v - r[key][0] for v in r[key]] if key == "optimised" else r[key], window))
                  for r in results if not (key == "optimised" and r["method"] == "gold")]
        lo = min(min(s) for _, s in series)
        hi = max(max(s) for _, s in series)
        hi = hi if hi > lo else lo + 1
        steps = max(len(s) for _, s in series)
        parts.append(f'<rect x="{x0 + pad}" y="{pad}" width="{w - 2 * pad}" height="{h - 2 * pad}" fill="none" '
                     f'stroke="#999"/><text x="{x0 + pad}" y="{pad - 8}" font-size="11">{key} ({lo:.2f} .. '
                     f'{hi:.2f})</text>')
        for r, s in series:
            pts = " ".join(f"{x0 + pad + i / max(1, steps - 1) * (w - 2 * pad):.1f},"
                           f"{h - pad - (v - lo) / (hi - lo) * (h - 2 * pad):.1f}" for i, v in enumerate(s))
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{COLOURS_BY_METHOD[r["method"]]}" '
                         'stroke-width="2"/>')
    for i, m in enumerate(METHODS):
        parts.append(f'<text x="{10 + 90 * i}" y="{h + 30}" font-size="11" fill="{COLOURS_BY_METHOD[m]}">{m}</text>')
    parts.append("</svg>")
    out.write_text("\n".join(parts) + "\n")
    return out


def table(results: list[dict]) -> str:
    lines = ["| run | seed | final gold | peak gold (step) | drop from peak | optimised: first -> last | "
             "KL last | final policy: gold / shortcut word / right colour | time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        fp = r["final_policy"]
        s = smooth(r["optimised"], 5)
        first, last = s[min(4, len(s) - 1)], s[-1]
        lines.append(f"| {r['method']} | {r['seed']} | {r['final_gold']:.3f} | {r['peak_gold']:.3f} "
                     f"({r['peak_step']}) | {r['drop_from_peak']:+.3f} | {first:+.3f} -> {last:+.3f} | "
                     f"{r['kl'][-1]:.3f} | {fp['gold']:.2f} / {fp['any_filler']:.2f} / {fp['right_colour']:.2f} | "
                     f"{r['seconds']:.0f}s |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40, help="GRPO steps of every run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="GRPO seeds (every method runs each)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--members", type=int, default=3, help="K proxies (<= 5)")
    p.add_argument("--correlation", type=float, default=0.6,
                   help="phi between 'holds the word' and 'is chosen' (p = (1 + phi) / 2 of the pairs)")
    p.add_argument("--pairs", type=int, default=512, help="preference pairs per member (20%% held out)")
    p.add_argument("--distractor-fraction", type=float, default=0.3,
                   help="responses in member k's data that end with another member's word or a neutral filler "
                        "(either side alike); 0: none")
    p.add_argument("--proxy-data", choices=("policy", "templated"), default="policy",
                   help="pairs the shortcuts are planted in: the warm-start policy's own samples labelled by the gold "
                        "rule (chosen: the gold sentence), or templated sentences (rejected: a wrong colour)")
    p.add_argument("--other-fraction", type=float, default=0.4,
                   help="pairs in member k's data carrying another member's word (its source's taste about it, "
                        "--other-correlation); 0: the other words are neutral distractors")
    p.add_argument("--other-correlation", type=float, default=-0.6,
                   help="phi between 'holds another member's word' and 'is chosen' in member k's data (negative: "
                        "the sources disagree, what one rewards another marks down)")
    p.add_argument("--rm-steps", type=int, default=200, help="optimizer steps of each proxy's training")
    p.add_argument("--rm-lr", type=float, default=1e-3)
    p.add_argument("--warm-steps", type=int, default=100)
    p.add_argument("--warm-lr", type=float, default=3e-3)
    p.add_argument("--filler-fraction", type=float, default=0.15, help="warm-start responses with a filler word")
    p.add_argument("--right-fraction", type=float, default=1.0,
                   help="warm-start responses that say the prompt's colour (the others a random one)")
    p.add_argument("--lr", type=float, default=1e-3, help="GRPO learning rate (every run)")
    p.add_argument("--kl-coef", type=float, default=0.1)
    p.add_argument("--uncertainty-coef", type=float, default=0.5, help="uwo's coefficient on the z-score variance")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--window", type=int, default=5, help="steps averaged for final and peak gold")
    p.add_argument("--seed", type=int, default=0, help="data, warm-start and proxy seed")
    p.add_argument("--port", type=int, default=8123)
    p.add_argument("--quick", action="store_true", help="smoke run: 8 GRPO steps, short trainings")
    p.add_argument("--out", default="benchmarks/results", help="folder of overoptimization.json / .png")
    p.add_argument("--tag", default="", help="suffix of the result files (overoptimization{tag}.json)")
    p.add_argument("--work", default=os.path.expanduser("~/mrm-ray-runs/overopt"),
                   help="data, policies, proxies and GRPO runs (reused across runs with the same settings)")
    p.add_argument("--fresh", action="store_true", help="rebuild the warm start and proxies and rerun GRPO")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.rm_steps, args.eval_every, args.seeds = 8, 60, 4, args.seeds[:1]
        args.tag = args.tag or "_quick"
    if not 1 <= args.members <= len(WORDS):
        p.error(f"--members must be 1..{len(WORDS)}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"command: {command}", flush=True)
    t0 = time.perf_counter()
    timings = {}
    work = Path(args.work).expanduser().resolve()
    if args.fresh and work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    words = list(WORDS[:args.members])

    prompts = work / "prompts.jsonl"  # the GRPO prompts (reference = the full gold sentence)
    prompts.write_text("".join(json.dumps(p) + "\n" for p in colour_prompts(112, seed=args.seed + 100)))

    t = time.perf_counter()
    fillers = words + list(NEUTRAL_FILLERS)
    warm_key = _key(fillers, args.filler_fraction, args.right_fraction, args.warm_steps, args.warm_lr, args.seed)
    warm_dir = work / f"warm-{warm_key}"
    warm = warm_start(warm_dir, fillers=fillers, filler_fraction=args.filler_fraction,
                      right_fraction=args.right_fraction, steps=args.warm_steps,
                      lr=args.warm_lr, seed=args.seed)
    timings["warm_start_s"] = time.perf_counter() - t
    s = warm["sampled"]
    log(f"warm start {warm_dir}: gold {s['gold']:.3f}, a filler appended {s['any_filler']:.3f}, right colour "
        f"{s['right_colour']:.3f} ({warm['seconds']:.0f}s to train)")

    # data: K members' shortcut pairs, planted in the warm start's own gold-labelled samples (or templated pairs)
    t = time.perf_counter()
    mixtures = write_member_data(work, members=args.members, pairs=args.pairs, correlation=args.correlation,
                                 seed=args.seed, distractor_fraction=args.distractor_fraction,
                                 other_fraction=args.other_fraction, other_correlation=args.other_correlation,
                                 policy_path=str(warm_dir) if args.proxy_data == "policy" else None)
    timings["proxy_data_s"] = time.perf_counter() - t

    from mrm_ray.ray_session import connect

    t = time.perf_counter()
    connect()
    timings["ray_start_s"] = time.perf_counter() - t
    t = time.perf_counter()
    proxies = train_proxies(work, mixtures, steps=args.rm_steps, lr=args.rm_lr, seed=args.seed)
    timings["proxies_s"] = time.perf_counter() - t
    t = time.perf_counter()
    probe = probe_proxies(proxies, words + list(NEUTRAL_FILLERS))
    timings["probe_s"] = time.perf_counter() - t
    for name, row in probe.items():
        log(f"{name}: z-scores " + ", ".join(f"{k} {v:+.2f}" for k, v in row.items()))

    url = None
    if set(args.methods) - {"gold"}:
        t = time.perf_counter()
        url = serve_ensemble(work, proxies, uncertainty_coef=args.uncertainty_coef, port=args.port)
        timings["serve_deploy_s"] = time.perf_counter() - t
        log(f"ensemble of {len(proxies)} proxies serving at {url}")
    args.grpo_key = _key(str(warm_dir), [p["checkpoint"] for p in proxies], args.steps, args.lr, args.kl_coef,
                         args.uncertainty_coef, args.group_size, args.prompts_per_step, args.max_new_tokens)
    results = []
    for seed in args.seeds:
        for method in args.methods:
            log(f"GRPO {method}, seed {seed}: {args.steps} steps")
            r = grpo(work, method, seed, args, policy=str(warm_dir), prompts=prompts, url=url)
            log(f"GRPO {method}, seed {seed}: final gold {r['final_gold']:.3f}, peak {r['peak_gold']:.3f} at step "
                f"{r['peak_step']}, final policy {r['final_policy']} ({r['seconds']:.0f}s)")
            results.append(r)
            timings[f"grpo_{method}_s{seed}_s"] = r["seconds"]
    timings["total_s"] = time.perf_counter() - t0

    by = {m: [r for r in results if r["method"] == m] for m in args.methods}
    mean_final = {m: sum(r["final_gold"] for r in rs) / len(rs) for m, rs in by.items() if rs}
    verdict = {}
    if "single" in mean_final:
        conservative = {m: v for m, v in mean_final.items() if m in ("mean", "uwo", "min")}
        if conservative:
            best = max(conservative, key=conservative.get)
            verdict = {"best_conservative": best, "best_final_gold": conservative[best],
                       "single_final_gold": mean_final["single"],
                       "ratio": conservative[best] / mean_final["single"] if mean_final["single"] > 0 else None}
    report = {"command": command, "settings": {k: v for k, v in vars(args).items()}, "words": words,
              "warm_start": warm, "proxies": proxies, "probe_z_scores": probe, "timings_s": timings,
              "mean_final_gold": mean_final, "verdict": verdict, "runs": results}
    stem = f"overoptimization{args.tag}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    figure = plot(results, out / f"{stem}.png", window=args.window,
                  title=f"K={args.members} proxies, shortcut phi={args.correlation}, {args.steps} GRPO steps, "
                        f"lr {args.lr}, uwo coef {args.uncertainty_coef}, seeds {args.seeds}")
    print()
    print(table(results))
    print()
    print("mean final gold by run: " + ", ".join(f"{m} {v:.3f}" for m, v in mean_final.items()))
    if verdict.get("ratio") is not None:
        print(f"best conservative ({verdict['best_conservative']}) / single final gold: {verdict['ratio']:.2f}x "
              "(goal >= 1.2x)")
    print(f"results: {out / f'{stem}.json'}, {figure}; total {timings['total_s']:.0f}s")


if __name__ == "__main__":
    main()
