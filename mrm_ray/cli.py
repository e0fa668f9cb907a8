"""The `mrm-ray` command: the jobs (train, evaluate, serve, grpo; mrm_ray/jobs.py) and the tools
around them (shipped configs, tiny checkpoints, scoring, data, ensembles, memory plans)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

def shared_data_dir() -> Path:
    """Real data made by others: `$MRM_SHARED_DATA`, else `../shared/data` from the current directory
    (beside a checkout, when run from it)."""
    return Path(os.environ.get("MRM_SHARED_DATA", "../shared/data")).expanduser().resolve()


def _cmd_tiny(args: argparse.Namespace) -> int:
    from mrm_ray.model.tiny import build_tiny_checkpoint

    out = build_tiny_checkpoint(args.out_dir, seed=args.seed, family=args.family, text_hidden=args.text_hidden,
                                vision_hidden=args.vision_hidden)
    print(f"tiny {args.family} checkpoint written to {out}")
    return 0


def _good(records) -> list[dict]:
    from mrm_ray.data.quarantine import Rejected

    rows = []
    for record in records:
        if isinstance(record, Rejected):
            print(f"skipped {record.position}: {record.reason}", file=sys.stderr)
        else:
            rows.append(record)
    return rows


def _load_rows(data: str | None, limit: int | None) -> tuple[list[dict], str]:
    from mrm_ray.data.readers.chat_messages import read_chat_messages
    from mrm_ray.data.synthetic import image_grounded_pairs

    if data:
        rows, what = _good(read_chat_messages(data)), data
    else:
        rlaif = shared_data_dir() / "rlaif-v-sample" / "rlaif-v.jsonl"
        if rlaif.is_file():
            rows, what = _good(read_chat_messages(rlaif)), str(rlaif)
        else:
            print(f"note: {rlaif} not found (set MRM_SHARED_DATA); scoring generated pairs instead",
                  file=sys.stderr)
            rows, what = list(image_grounded_pairs(16, seed=0)), "generated image-grounded pairs"
    return rows[:limit] if limit else rows, what


def _cmd_score(args: argparse.Namespace) -> int:
    from mrm_ray.model.inputs import PairEncoder
    from mrm_ray.model.processor import load_processor
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.model.scorer import Scorer

    rows, what = _load_rows(args.data, args.limit)
    model = RewardModel.from_pretrained(args.model, packed_attention=args.packed_attention)
    encoder = PairEncoder(load_processor(args.model, max_pixels=args.max_pixels))
    scorer = Scorer.from_model(model, encoder, max_batch_tokens=args.max_batch_tokens)
    scores = scorer.score_pairs(rows, progress=True)
    for row, score in zip(rows, scores):
        if isinstance(score, str):
            print(f"{row['id']}: {score}", file=sys.stderr)
    kept = [(row, score) for row, score in zip(rows, scores) if not isinstance(score, str)]
    print(f"scored {len(kept)} of {len(rows)} pairs from {what} with {args.model}")
    print(f"{'id':<28} {'chosen':>9} {'rejected':>9}  correct")
    for row, (c, r) in kept:
        print(f"{row['id'][:28]:<28} {c:>9.4f} {r:>9.4f}  {'yes' if c > r else 'no'}")
    correct = sum(c > r for _, (c, r) in kept)
    print(f"pairwise accuracy {correct / max(len(kept), 1):.2%} ({correct}/{len(kept)})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mrm_ray.model.tiny import shared_tiny_checkpoint

    path = shared_tiny_checkpoint(args.run_dir)
    print(f"tiny Qwen2.5-VL checkpoint at {path}")
    args.model = str(path)
    print("an untrained tiny model: expect accuracy near chance; the point is the path runs end to end")
    return _cmd_score(args)


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{what} {item!r} must look like NAME=VALUE")
        out[name] = value
    return out


def _prepare(args: argparse.Namespace):
    from mrm_ray.config import DataConfig, parse_overrides, validate
    from mrm_ray.data.mixture import load_mixture
    from mrm_ray.data.pipeline import prepare_mixture
    from mrm_ray.ray_session import connect

    image_roots = {name: {"image_root": root} for name, root in _pairs(args.image_root, "--image-root").items()}
    mixture = load_mixture(args.mixture, paths=_pairs(args.path, "--path"), options=image_roots,
                           skip_missing=args.skip_missing)
    config = validate(DataConfig, parse_overrides(args.overrides), where="data")
    connect()
    return mixture, prepare_mixture(mixture, processor_path=args.model, data_config=config, run_dir=args.run_dir,
                                    concurrency=args.workers)


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from mrm_ray.data.report import format_report, mixture_stats

    # inspect reports however many records are bad; `prepare` and training enforce the limit
    args.overrides = [o for o in args.overrides if not o.startswith("max_bad_fraction=")] + ["max_bad_fraction=1.0"]
    _, prepared = _prepare(args)
    print(format_report(prepared, mixture_stats(prepared)))
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from mrm_ray.data.export import write_prepared

    mixture, prepared = _prepare(args)
    out = write_prepared(prepared, args.out, mixture=mixture, encoded=args.encoded, concurrency=args.workers)
    n_train = sum(c["train"] for c in prepared.counts.values())
    n_held = sum(c["held_out"] for c in prepared.counts.values())
    print(f"wrote {n_train} train and {n_held} held-out pairs "
          f"({'encoded' if args.encoded else 'canonical'} Parquet shards) to {out}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from mrm_ray.config import load_run_config
    from mrm_ray.model.published import PUBLISHED, published_config
    from mrm_ray.train.plan import architecture, estimate, format_plan

    from mrm_ray import presets

    path = presets.config_file("train", args.preset)
    if path.stem not in PUBLISHED:
        raise SystemExit(f"unknown preset {args.preset!r}; presets with published architectures: {sorted(PUBLISHED)}")
    run = load_run_config(str(path), args.overrides)
    plan = estimate(architecture(published_config(path.stem)), run.train, gpus=args.gpus, tokens_per_pair=args.tokens,
                    image_tokens=args.image_tokens)
    print(format_plan(path.stem, plan, gpus=args.gpus, gpu_mem_gib=args.gpu_mem, train=run.train))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from mrm_ray.model.processor import load_processor
    from mrm_ray.model.reward_checkpoint import resolve
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.model.seq_cls import export_seq_cls

    path = resolve(args.model)
    model = RewardModel.from_pretrained(path)
    if args.format == "hf-seq-cls":
        try:
            out = export_seq_cls(model, args.out, processor=load_processor(path))
        except ValueError as exc:
            raise SystemExit(f"cannot export {args.model} as hf-seq-cls: {exc}") from None
        print(f"{model.family.seq_cls} checkpoint written to {out} (score bias "
              f"{float(model.head.mlp[-1].bias):+.6f} kept in config.json; transformers' scores are ours minus it)")
    else:
        out = model.save_pretrained(args.out, processor=load_processor(path))
        print(f"reward checkpoint written to {out}")
    return 0


def _cmd_ensemble_fit(args: argparse.Namespace) -> int:
    from mrm_ray.eval.benchmarks import parse_named
    from mrm_ray.ensemble import save_ensemble
    from mrm_ray.eval.fit import fit_ensemble
    from mrm_ray.ray_session import connect

    connect()
    config = fit_ensemble(dict(parse_named(m) for m in args.models), [parse_named(d) for d in args.data],
                          method=args.method, text_members=args.text_members, image_root=args.image_root,
                          batch_size=args.batch_size, limit=args.limit)
    out = save_ensemble(config, args.out)
    for m in config.members:
        print(f"{m.name:<20} weight {m.weight:.4f}  accuracy {config.fitted_on['accuracy'][m.name]:.4f}  "
              f"score mean {m.score_mean:.4f} std {m.score_std:.4f}  modalities {','.join(m.modalities)}")
    print(f"fitted on {config.fitted_on['pairs']} pairs ({config.fitted_on['left_out']} left out); wrote {out}")
    return 0


def _cmd_configs(args: argparse.Namespace) -> int:
    from mrm_ray import presets

    for kind in presets.KINDS:
        for name in presets.names(kind):
            print(f"{kind:<8} {name:<16} {presets.shipped(kind, name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mrm_ray.jobs import JOBS
    from mrm_ray.model.tiny import FAMILY_NAMES

    parser = argparse.ArgumentParser(prog="mrm-ray", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for job, (add, help_text) in JOBS.items():
        add(sub.add_parser(job, help=help_text, description=help_text))

    configs = sub.add_parser("configs", help="list the shipped configs (what --config NAME picks) and their paths")
    configs.set_defaults(func=_cmd_configs)

    tiny = sub.add_parser("tiny", help="write a tiny random checkpoint directory of a supported family")
    tiny.add_argument("out_dir")
    tiny.add_argument("--family", choices=FAMILY_NAMES, default="qwen2_5_vl",
                      help="backbone family (default qwen2_5_vl)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--text-hidden", type=int, default=64)
    tiny.add_argument("--vision-hidden", type=int, default=64)
    tiny.set_defaults(func=_cmd_tiny)

    def scoring_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", help="chat-message pair JSONL (default: the shared RLAIF-V sample)")
        p.add_argument("--limit", type=int, default=None)
        p.add_argument("--max-batch-tokens", type=int, default=16384, help="real tokens per packed forward")
        p.add_argument("--max-pixels", type=int, default=None, help="override the processor's image budget")
        p.add_argument("--packed-attention", choices=("auto", "varlen", "sdpa", "dense"), default="auto",
                       help="kernel for packed groups (dense: the 4D-mask reference)")

    score = sub.add_parser("score", help="score chosen/rejected pairs with a (reward) checkpoint")
    score.add_argument("--model", required=True, help="Qwen2.5-VL or reward checkpoint directory")
    scoring_options(score)
    score.set_defaults(func=_cmd_score)

    demo = sub.add_parser("demo", help="build the tiny checkpoint and score the real RLAIF-V pairs")
    demo.add_argument("--run-dir", default="runs/demo")
    scoring_options(demo)
    demo.set_defaults(func=_cmd_demo)

    export = sub.add_parser("export", help="write a reward model in another format (hf-seq-cls: transformers' "
                                           "*ForSequenceClassification; reward: our reward checkpoint)")
    export.add_argument("model", help="a reward checkpoint, a sequence-classification checkpoint, or tiny:SEED")
    export.add_argument("out")
    export.add_argument("--format", choices=("hf-seq-cls", "reward"), required=True)
    export.set_defaults(func=_cmd_export)

    plan = sub.add_parser("plan", help="per-GPU memory estimate of a training preset")
    plan.add_argument("preset", help="a train preset with a published architecture: qwen2_5_vl_3b ... qwen2_5_vl_72b, "
                                     "qwen3_vl_2b ... qwen3_vl_32b, qwen3_5_9b, qwen3_5_27b (or its YAML)")
    plan.add_argument("--gpus", type=int, required=True)
    plan.add_argument("--gpu-mem", type=float, required=True, help="GiB per GPU, e.g. 80")
    plan.add_argument("--tokens", type=int, default=4096, help="packed tokens per pair (prompt + both responses)")
    plan.add_argument("--image-tokens", type=int, default=1280, help="image tokens per pair")
    plan.set_defaults(func=_cmd_plan, overrides=[])

    data = sub.add_parser("data", help="inspect or prepare a preference-data mixture")
    data_sub = data.add_subparsers(dest="data_command", required=True)

    def mixture_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("mixture", help="a mixture YAML, or a shipped mixture's name (basereward)")
        p.add_argument("--model", required=True, help="Qwen2.5-VL checkpoint dir whose processor encodes the data")
        p.add_argument("--path", action="append", metavar="SOURCE=PATH", help="fill in or override a source's path")
        p.add_argument("--image-root", action="append", metavar="SOURCE=DIR", help="a source's image root")
        p.add_argument("--skip-missing", action="store_true", help="drop sources that have no path")
        p.add_argument("--run-dir", default="runs/data", help="where the quarantine file goes")
        p.add_argument("--workers", type=int, default=1, help="preprocessing actors")
        p.set_defaults(overrides=[])  # trailing key=value data settings (see main)

    inspect_p = data_sub.add_parser("inspect", help="per-source counts, size and length percentiles, bad records")
    mixture_options(inspect_p)
    inspect_p.set_defaults(func=_cmd_data_inspect)
    prepare_p = data_sub.add_parser("prepare", help="write the checked mixture as Parquet shards")
    mixture_options(prepare_p)
    prepare_p.add_argument("--out", required=True)
    prepare_p.add_argument("--encoded", action="store_true", help="write model-ready columns, not canonical pairs")
    prepare_p.set_defaults(func=_cmd_data_prepare)

    ensemble = sub.add_parser("ensemble", help="fit an ensemble of reward models")
    ensemble_sub = ensemble.add_subparsers(dest="ensemble_command", required=True)
    fit = ensemble_sub.add_parser("fit", help="score validation pairs with each member and write ensemble.yaml")
    fit.add_argument("--models", nargs="+", required=True, metavar="NAME=PATH", help="reward checkpoints")
    fit.add_argument("--data", action="append", required=True, metavar="READER=PATH",
                     help="validation pairs: a benchmark or reader name = file (repeatable)")
    fit.add_argument("--method", default="mean", choices=("mean", "z_mean", "accuracy_weighted",
                                                           "confidence_weighted"))
    fit.add_argument("--text-members", nargs="*", default=[], metavar="NAME",
                     help="route text-only inputs to these members only, image inputs to the others "
                          "(BaseReward routes text to a text reward model)")
    fit.add_argument("--image-root", help="folder the data's image paths are relative to")
    fit.add_argument("--batch-size", type=int, default=16)
    fit.add_argument("--limit", type=int, help="first N good pairs per data file")
    fit.add_argument("--out", default="ensemble.yaml")
    fit.set_defaults(func=_cmd_ensemble_fit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; data commands also take trailing `key=value` data settings,
    e.g. `max_length=4096 max_pixels=1003520 image_modes=reject`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "overrides") or any("=" not in e or e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*getattr(args, "overrides", []), *extra]
    args.argv = argv[1:]  # after the command: what a job submitted with --address runs again
    from mrm_ray.config import run_main

    return run_main(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
