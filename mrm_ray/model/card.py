"""The model card: a Hugging Face `README.md` (YAML front matter, then Markdown) beside every exported reward model.

It is generated from what the checkpoint's `reward_config.json` records of the run that made it (the run
config, the data mixture's counts per source, the held-out figures per source, the score normalisation), so
a user who publishes the model (to a hub or an internal registry) writes none of it by hand, and the numbers
are the run's own. An evaluation report (`mrm-ray evaluate`'s report.json) adds the benchmark figures next to
the published ones. The front matter follows the Hub's model-card metadata (base_model, library_name, tags,
datasets, metrics, model-index); `base_model` is set only when the backbone is named by a Hub id.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CARD = "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _cell(text: Any) -> str:
    """Text for a Markdown table cell (a `|` would end the cell)."""
    return str(text).replace("|", "\\|")


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def report_member(report: Mapping[str, Any], model_path: str, member: str | None = None) -> str:
    """Which of the report's members is this model: `member` if named, else the one whose path is the model's,
    else the report's only member."""
    members = report.get("members", {})
    if member is not None:
        if member not in members:
            raise ValueError(f"--report-member {member!r} is not in the report (members: {', '.join(members)})")
        return member
    same = [n for n, m in members.items() if Path(str(m.get("path", ""))).expanduser().resolve()
            == Path(model_path).expanduser().resolve()]
    if len(same) == 1:
        return same[0]
    if len(members) == 1:
        return next(iter(members))
    raise ValueError(f"the report scores {len(members)} members ({', '.join(members)}) and none has this model's "
                     "path: name one with --report-member")


def _benchmarks(report: Mapping[str, Any], member: str) -> list[dict]:
    """Per benchmark: title, key, this member's headline figures, the published ones, counts."""
    out = []
    for key, bench in report.get("benchmarks", {}).items():
        result = bench.get("results", {}).get(member)
        if not result:
            continue
        out.append({"key": key, "title": bench["title"], "headline": list(bench["headline"]),
                    "ours": {h: result[h] for h in bench["headline"] if h in result},
                    "reference": bench.get("reference", {}), "counts": bench.get("counts", {})})
    return out


def front_matter(meta: Mapping[str, Any], *, family: str, vision: bool, fmt: str,
                 benchmarks: list[dict]) -> dict:
    """The YAML front matter's fields."""
    prov = meta.get("provenance", {})
    run = prov.get("run_config", {})
    name = run.get("name") or "reward-model"
    base = str(prov.get("base_model", ""))
    counts = prov.get("data_counts") or {}
    fields: dict[str, Any] = {}
    if _HUB_ID.match(base) and not Path(base).expanduser().exists():
        fields["base_model"] = base
    fields["library_name"] = "transformers" if fmt == "hf-seq-cls" else "mrm-ray"
    if fmt == "hf-seq-cls":
        fields["pipeline_tag"] = "text-classification"
    fields["tags"] = ["reward-model", "mrm-ray", "bradley-terry", family,
                      "vision-language" if vision else "text-only"]
    if counts:
        fields["datasets"] = sorted(counts)
    fields["metrics"] = ["accuracy"]
    results = []
    if prov.get("held_out_accuracy") is not None:
        results.append({"task": {"type": "reward-modeling", "name": "Reward modeling"},
                        "dataset": {"name": "held-out split of the training mixture", "type": "held-out"},
                        "metrics": [{"type": "accuracy", "name": "held-out pairwise accuracy",
                                     "value": float(prov["held_out_accuracy"])}]})
    for b in benchmarks:
        results.append({"task": {"type": "reward-modeling", "name": "Reward modeling"},
                        "dataset": {"name": b["title"], "type": b["key"]},
                        "metrics": [{"type": "accuracy", "name": h, "value": float(v)}
                                    for h, v in b["ours"].items()]})
    if results:
        fields["model-index"] = [{"name": name, "results": results}]
    return fields


def model_card(meta: Mapping[str, Any], *, family: str, vision: bool, fmt: str = "reward",
               report: Mapping[str, Any] | None = None, member: str | None = None) -> str:
    """The card's text for a checkpoint's `reward_config.json` contents (`meta`); `report` (with `member`, this
    model's name in it) adds its benchmark figures."""
    import yaml

    prov = meta.get("provenance", {})
    run = prov.get("run_config", {})
    benchmarks = _benchmarks(report, member) if report is not None and member is not None else []
    fields = front_matter(meta, family=family, vision=vision, fmt=fmt, benchmarks=benchmarks)
    head = meta.get("head", {})
    loss = run.get("loss", {})
    train = run.get("train", {})
    name = run.get("name") or "reward model"
    hidden = head.get("hidden_size") or "that of the backbone"
    lines = ["---", yaml.safe_dump(fields, sort_keys=False).rstrip(), "---", "", f"# {name}", ""]
    lines += [f"A {'vision-language' if vision else 'text-only'} reward model trained with mrm-ray, as the "
              "BaseReward recipe (arXiv 2509.16127) builds one: the backbone's LM head replaced by a "
              f"{head.get('num_layers', 2)}-layer MLP reward head ({head.get('activation', 'silu')}), the reward read "
              "at the last real token of the response, trained with a Bradley-Terry loss on chosen/rejected "
              "pairs" + (" with and without images." if vision else "."), ""]
    lines += ["## Use", "", "```bash",
              "mrm-ray score --model PATH --data pairs.jsonl          # score preference pairs",
              "mrm-ray serve --config serve.yaml                      # a member: {name: rm, path: PATH}",
              "```", ""]
    if fmt == "hf-seq-cls":
        lines += [f"This copy is transformers' `*ForSequenceClassification` layout ({family}); its scores equal "
                  "mrm-ray's minus the head's last bias, which `config.json` keeps.", ""]
    lines += ["## Model", "", "| | |", "|---|---|",
              f"| backbone | `{prov.get('base_model', 'unknown')}` ({family}, "
              f"{'images and text' if vision else 'text only'}) |",
              f"| reward head | {head.get('num_layers', 2)} layers, {head.get('activation', 'silu')}, hidden size "
              f"{hidden}, dropout {head.get('dropout', 0.0)} |",
              f"| reward token | {_cell(meta.get('reward_token', 'last real token'))} |",
              f"| score normalisation | mean {float(meta.get('score_mean', 0.0)):.6g}, std "
              f"{float(meta.get('score_std', 1.0)):.6g} (held-out scores; ensembles z-score with these) |"]
    if loss:
        lines.append(f"| loss | Bradley-Terry; margin {'on' if loss.get('use_margin') else 'off'}, centring "
                     f"coefficient {loss.get('centering_coef', 0.0)}, length normalisation "
                     f"{'on' if loss.get('length_normalize') else 'off'} |")
    lines.append("")
    counts = prov.get("data_counts") or {}
    held = prov.get("held_out", {}) or {}
    if counts:
        lines += ["## Data mixture", "",
                  f"Mixture: `{run.get('mixture')}`." if run.get("mixture") else
                  f"Synthetic pairs: {run.get('synthetic')}.", "",
                  "| source | available | quarantined | in the mixture | train | held out | held-out accuracy |",
                  "|---|---|---|---|---|---|---|"]
        for source, c in sorted(counts.items()):
            lines.append(f"| {source} | {c.get('available', '')} | {c.get('rejected', '')} | {c.get('mixture', '')} "
                         f"| {c.get('train', '')} | {c.get('held_out', '')} | "
                         f"{_pct(held.get('per_source', {}).get(source))} |")
        lines.append("")
    if train:
        lora = train.get("lora")
        lines += ["## Training", "", "| | |", "|---|---|",
                  f"| steps | {prov.get('step', train.get('max_steps'))} of {train.get('max_steps')} (epochs "
                  f"{train.get('epochs')}) |",
                  f"| learning rate | {train.get('learning_rate')} (head {train.get('head_learning_rate') or 'same'}), "
                  f"warm-up {train.get('warmup_ratio')}, weight decay {train.get('weight_decay')} |",
                  f"| batch | {train.get('global_batch_size')} pairs a step, micro-batches of "
                  f"{train.get('micro_batch_size')} |",
                  f"| DeepSpeed | ZeRO-{train.get('zero_stage')} on {train.get('num_workers')} workers, precision "
                  f"{train.get('precision')} |",
                  f"| LoRA | {_cell(lora) if lora else 'none (full fine-tuning)'} |",
                  f"| seed | {train.get('seed')} |", ""]
    lines += ["## Evaluation", ""]
    if prov.get("held_out_accuracy") is not None:
        extra = f" over {held['pairs']} pairs" if held.get("pairs") else ""
        lines += [f"Held-out pairwise accuracy: **{_pct(prov['held_out_accuracy'])}%**{extra}"
                  + (f", loss {held['loss']:.4f}." if held.get("loss") is not None else "."), ""]
    for b in benchmarks:
        labels = list(b["reference"])
        lines += [f"### {b['title']}", "", "| model | " + " | ".join(b["headline"]) + " |",
                  "|---|" + "---|" * len(b["headline"]),
                  "| this model | " + " | ".join(_pct(b["ours"].get(h)) for h in b["headline"]) + " |"]
        lines += [f"| {label} (published) | " + " | ".join(_pct(b["reference"][label].get(h)) for h in b["headline"])
                  + " |" for label in labels]
        if b["counts"].get("stand_in_images"):
            lines += ["", f"{b['counts']['stand_in_images']} of {b['counts'].get('scored')} pairs were scored with "
                      "stand-in images (the benchmark's own were absent): these figures say nothing about the model."]
        lines.append("")
    if not benchmarks:
        lines += ["No benchmark figures: `mrm-ray export MODEL OUT --format reward --report report.json` adds those "
                  "of an evaluation report.", ""]
    lines += ["## Provenance", "", f"- mrm-ray {prov.get('mrm_ray_version', 'unknown')}, saved "
              f"{prov.get('saved_at', 'unknown')}"]
    if prov.get("training_checkpoint"):
        lines.append(f"- training checkpoint `{prov['training_checkpoint']}` (step {prov.get('step')})")
    if prov.get("exported_from"):
        lines.append(f"- exported from `{prov['exported_from']}`")
    lines.append("- the whole run config is in `reward_config.json` (`provenance.run_config`)")
    return "\n".join(lines) + "\n"


def write_model_card(out_dir: str | Path, meta: Mapping[str, Any], **options) -> Path:
    """`model_card` written atomically as OUT_DIR/README.md."""
    from mrm_ray.atomic import atomic_file

    path = Path(out_dir) / CARD
    with atomic_file(path) as f:
        f.write(model_card(meta, **options))
    return path
