"""The `mrm-ray` command: the jobs (train, evaluate, serve, grpo; mrm_ray/jobs.py) and the tools
around them (shipped configs, tiny checkpoints, scoring, data, ensembles, memory plans).

A command's flags are spellings of its config's settings (config/commands.py); commands with a
config also take `--config FILE` and trailing `a.b=value` overrides, checked as one."""

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


def _score_rows(data: str | None, reader: str | None, limit: int | None) -> tuple[list[dict], str]:
    """The pairs to score: `data` read by `reader` (by default the one its content says), else the shared
    RLAIF-V sample, else generated pairs; records that cannot be read are named on stderr."""
    from mrm_ray.data.quarantine import Rejected
    from mrm_ray.data.readers import detect_reader, get_reader
    from mrm_ray.data.synthetic import image_grounded_pairs

    if data is None:
        rlaif = shared_data_dir() / "rlaif-v-sample" / "rlaif-v.jsonl"
        if not rlaif.is_file():
            print(f"note: {rlaif} not found (set MRM_SHARED_DATA); scoring generated pairs instead", file=sys.stderr)
            return list(image_grounded_pairs(16, seed=0)), "generated image-grounded pairs"
        data, reader = str(rlaif), reader or "chat_messages"
    reader = reader or detect_reader(data)
    rows = []
    for record in get_reader(reader)(data):
        if isinstance(record, Rejected):
            print(f"skipped {record.position}: {record.reason}", file=sys.stderr)
        else:
            rows.append(record)
    return (rows[:limit] if limit else rows), f"{data} ({reader})"


def _cmd_score(args: argparse.Namespace) -> int:
    from mrm_ray.data.schema import to_chat_messages
    from mrm_ray.model import checkpoints
    from mrm_ray.model.inputs import PairEncoder
    from mrm_ray.model.processor import load_processor
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.model.scorer import Scorer

    rows, what = _score_rows(args.data, args.reader, args.limit)
    if not rows:
        print(f"error: no pairs could be read from {what}; the lines above say why (give --reader NAME if it is "
              "another format)", file=sys.stderr)
        return 1
    path = checkpoints.resolve(args.model, want=checkpoints.BACKBONE)
    model = RewardModel.from_pretrained(path, packed_attention=args.packed_attention)
    encoder = PairEncoder(load_processor(path, max_pixels=args.max_pixels))
    scorer = Scorer.from_model(model, encoder, max_batch_tokens=args.max_batch_tokens)
    inputs = [{**row, "prompt": to_chat_messages(row["prompt"]) if row.get("source") else row["prompt"]}
              for row in rows]
    scores = scorer.score_pairs(inputs, progress=True)
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
    return 0 if kept else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from mrm_ray.model import checkpoints

    path = checkpoints.resolve("tiny", want=checkpoints.BACKBONE)
    print(f"tiny Qwen2.5-VL checkpoint at {path}")
    args.model, args.reader = str(path), None
    print("an untrained tiny model: expect accuracy near chance; the point is the path runs end to end")
    return _cmd_score(args)


def _data_config(args: argparse.Namespace):
    """The data command's config: its flags, then trailing settings (`max_length=4096` is `data.max_length`)."""
    from mrm_ray.config import DataCommandConfig, load
    from mrm_ray.jobs import pairs

    own = set(DataCommandConfig.__dataclass_fields__)  # a bare key that is not the command's own is a data setting
    overrides = [o if "." in o.partition("=")[0] or o.partition("=")[0] in own else f"data.{o}"
                 for o in args.overrides]
    values = {"mixture": args.mixture, "model": args.model, "paths": pairs(args.path, "--path"),
              "image_roots": pairs(args.image_root, "--image-root"), "skip_missing": args.skip_missing or None,
              "run_dir": args.run_dir, "workers": args.workers, "out": getattr(args, "out", None),
              "encoded": getattr(args, "encoded", None) or None}
    return load(DataCommandConfig, args.config, overrides, values=values)


def _prepare(config):
    from mrm_ray.data.mixture import load_mixture
    from mrm_ray.data.pipeline import prepare_mixture
    from mrm_ray.model import checkpoints
    from mrm_ray.ray_session import connect

    mixture = load_mixture(config.mixture, paths=config.paths,
                           options={name: {"image_root": root} for name, root in config.image_roots.items()},
                           skip_missing=config.skip_missing)
    model = checkpoints.resolve(config.model, want=checkpoints.BACKBONE)
    connect()
    return mixture, prepare_mixture(mixture, processor_path=model, data_config=config.data, run_dir=config.run_dir,
                                    concurrency=config.workers)


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    import dataclasses

    from mrm_ray.data.report import format_report, mixture_stats

    config = _data_config(args)
    # inspect reports however many records are bad; `prepare` and training enforce the limit
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, max_bad_fraction=1.0))
    _, prepared = _prepare(config)
    print(format_report(prepared, mixture_stats(prepared)))
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from mrm_ray.config import ConfigError
    from mrm_ray.data.export import write_prepared

    config = _data_config(args)
    if not config.out:
        raise ConfigError("out: `mrm-ray data prepare` writes to --out DIR")
    mixture, prepared = _prepare(config)
    out = write_prepared(prepared, config.out, mixture=mixture, encoded=config.encoded, concurrency=config.workers)
    print(f"wrote {prepared.n_train} train and {prepared.n_held_out} held-out pairs "
          f"({'encoded' if config.encoded else 'canonical'} Parquet shards) to {out}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from mrm_ray.config import ConfigError, PlanConfig, config_file, load, load_run_config
    from mrm_ray.model.published import PUBLISHED, published_config
    from mrm_ray.train.plan import architecture, estimate, format_plan

    plan_keys = set(PlanConfig.__dataclass_fields__)
    mine = [o for o in args.overrides if o.partition("=")[0] in plan_keys]
    config = load(PlanConfig, None, mine, values={"preset": args.preset, "gpus": args.gpus, "gpu_mem": args.gpu_mem,
                                                  "tokens": args.tokens, "image_tokens": args.image_tokens})
    path = config_file("train", config.preset)
    if path.stem not in PUBLISHED:
        raise ConfigError(f"unknown preset {config.preset!r}; presets with published architectures: "
                          f"{sorted(PUBLISHED)}")
    run = load_run_config(str(path), [o for o in args.overrides if o not in mine])
    plan = estimate(architecture(published_config(path.stem)), run.train, gpus=config.gpus,
                    tokens_per_pair=config.tokens, image_tokens=config.image_tokens)
    print(format_plan(path.stem, plan, gpus=config.gpus, gpu_mem_gib=config.gpu_mem, train=run.train))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import json

    from mrm_ray import storage
    from mrm_ray.model import checkpoints
    from mrm_ray.model.card import report_member, write_model_card
    from mrm_ray.model.processor import load_processor
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.model.seq_cls import export_seq_cls

    path = checkpoints.resolve(args.model)
    report = member = None
    if args.report:  # checked before anything is loaded or written
        report = json.loads(storage.local_copy(args.report).read_text())
        try:
            member = report_member(report, str(path), args.report_member)
        except ValueError as exc:
            raise SystemExit(f"error: --report {args.report}: {exc}") from None
    model = RewardModel.from_pretrained(path)
    extra = {"exported_from": str(args.model)}
    if args.format == "hf-seq-cls":
        try:
            out = export_seq_cls(model, args.out, processor=load_processor(path))
        except ValueError as exc:
            raise SystemExit(f"cannot export {args.model} as hf-seq-cls: {exc}") from None
        write_model_card(out, model.meta(extra), family=model.family.name, vision=model.family.vision,
                         fmt="hf-seq-cls", report=report, member=member)
        print(f"{model.family.seq_cls} checkpoint written to {out} (score bias "
              f"{float(model.head.mlp[-1].bias):+.6f} kept in config.json; transformers' scores are ours minus it)")
    else:
        out = model.save_pretrained(args.out, processor=load_processor(path), extra=extra, report=report,
                                    report_member=member)
        print(f"reward checkpoint written to {out}")
    print(f"model card: {out / 'README.md'}" + (f" (benchmark figures of {member} in {args.report})" if report else ""))
    return 0


def _cmd_ensemble_fit(args: argparse.Namespace) -> int:
    from mrm_ray.config import FitConfig, load
    from mrm_ray.ensemble import save_ensemble
    from mrm_ray.eval.fit import fit_ensemble
    from mrm_ray.jobs import check_early, named
    from mrm_ray.model import checkpoints
    from mrm_ray.ray_session import connect

    config = load(FitConfig, args.config, args.overrides, values={
        "models": named(args.models), "data": named(args.data), "method": args.method,
        "text_members": args.text_members, "image_root": args.image_root, "batch_size": args.batch_size,
        "limit": args.limit, "out": args.out})
    for name, path in config.models.items():
        check_early(checkpoints.check, path, modalities=(), name=name)
    connect()
    fitted = fit_ensemble(config)
    out = save_ensemble(fitted, config.out)
    for m in fitted.members:
        print(f"{m.name:<20} weight {m.weight:.4f}  accuracy {fitted.fitted_on['accuracy'][m.name]:.4f}  "
              f"score mean {m.score_mean:.4f} std {m.score_std:.4f}  modalities {','.join(m.modalities)}")
    print(f"fitted on {fitted.fitted_on['pairs']} pairs ({fitted.fitted_on['left_out']} left out); wrote {out}")
    return 0


def _cmd_configs(args: argparse.Namespace) -> int:
    from mrm_ray.config import shipped

    for kind in shipped.KINDS:
        for name in shipped.names(kind):
            print(f"{kind:<8} {name:<16} {shipped.path(kind, name)}")
    return 0


def config_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--config", help=f"a YAML file of the {what}'s settings (flags and key=value win over it)")
    parser.set_defaults(overrides=[])  # trailing key=value settings (see main)


def build_parser() -> argparse.ArgumentParser:
    from mrm_ray.config import MAX_BATCH_TOKENS, METHODS
    from mrm_ray.jobs import JOBS
    from mrm_ray.model.families import DEFAULT, TINY_FAMILIES

    parser = argparse.ArgumentParser(prog="mrm-ray", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for job, (add, help_text) in JOBS.items():
        add(sub.add_parser(job, help=help_text, description=help_text))

    configs = sub.add_parser("configs", help="list the shipped configs (what --config NAME picks) and their paths")
    configs.set_defaults(func=_cmd_configs)

    tiny = sub.add_parser("tiny", help="write a tiny random checkpoint directory of a supported family")
    tiny.add_argument("out_dir")
    tiny.add_argument("--family", choices=TINY_FAMILIES, default=DEFAULT, help=f"backbone family (default {DEFAULT})")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--text-hidden", type=int, default=64)
    tiny.add_argument("--vision-hidden", type=int, default=64)
    tiny.set_defaults(func=_cmd_tiny)

    def scoring_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", help="preference pairs in any supported format (default: the shared RLAIF-V sample)")
        p.add_argument("--reader", help="the format's reader (mrm_ray/data/readers; default: what the file holds)")
        p.add_argument("--limit", type=int, default=None)
        p.add_argument("--max-batch-tokens", type=int, default=MAX_BATCH_TOKENS, help="real tokens per packed forward")
        p.add_argument("--max-pixels", type=int, default=None, help="override the processor's image budget")
        p.add_argument("--packed-attention", choices=("auto", "varlen", "sdpa", "dense"), default="auto",
                       help="kernel for packed groups (dense: the 4D-mask reference)")

    score = sub.add_parser("score", help="score chosen/rejected pairs with a (reward) checkpoint")
    score.add_argument("--model", required=True, help="a reward checkpoint, a backbone, or tiny[:FAMILY][@SEED]")
    scoring_options(score)
    score.set_defaults(func=_cmd_score)

    demo = sub.add_parser("demo", help="build the tiny checkpoint and score the real RLAIF-V pairs")
    scoring_options(demo)
    demo.set_defaults(func=_cmd_demo)

    export = sub.add_parser("export", help="write a reward model in another format (hf-seq-cls: transformers' "
                                           "*ForSequenceClassification; reward: our reward checkpoint)")
    export.add_argument("model", help="a reward checkpoint, a sequence-classification checkpoint, or tiny:...")
    export.add_argument("out")
    export.add_argument("--format", choices=("hf-seq-cls", "reward"), required=True)
    export.add_argument("--report", help="an evaluation report.json (mrm-ray evaluate) whose benchmark figures go "
                                         "into the model card, next to the published ones")
    export.add_argument("--report-member", help="this model's name in the report (default: the member with this "
                                                "model's path, or the report's only member)")
    export.set_defaults(func=_cmd_export)

    plan = sub.add_parser("plan", help="per-GPU memory estimate of a training preset (trailing a.b=value: the run's)")
    plan.add_argument("preset", help="a train preset with a published architecture: qwen2_5_vl_3b ... qwen2_5_vl_72b, "
                                     "qwen3_vl_2b ... qwen3_vl_32b, qwen3_vl_30b_a3b, qwen3_vl_235b_a22b, qwen3_5_9b, "
                                     "qwen3_5_27b, qwen3_5_35b_a3b (or its YAML)")
    plan.add_argument("--gpus", type=int, required=True)
    plan.add_argument("--gpu-mem", type=float, required=True, help="GiB per GPU, e.g. 80")
    plan.add_argument("--tokens", type=int, help="packed tokens per pair (prompt + both responses; default 4096)")
    plan.add_argument("--image-tokens", type=int, help="image tokens per pair (default 1280)")
    plan.set_defaults(func=_cmd_plan, overrides=[])

    data = sub.add_parser("data", help="inspect or prepare a preference-data mixture")
    data_sub = data.add_subparsers(dest="data_command", required=True)

    def mixture_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("mixture", nargs="?", help="a mixture YAML, or a shipped mixture's name (basereward)")
        p.add_argument("--model", help="the checkpoint whose processor encodes the data (or tiny[:FAMILY])")
        p.add_argument("--path", action="append", metavar="SOURCE=PATH", help="fill in or override a source's path")
        p.add_argument("--image-root", action="append", metavar="SOURCE=DIR", help="a source's image root")
        p.add_argument("--skip-missing", action="store_true", help="drop sources that have no path")
        p.add_argument("--run-dir", help="where the quarantine file goes (default runs/data)")
        p.add_argument("--workers", type=int, help="preprocessing actors (default 1)")
        config_option(p, "data command")

    inspect_p = data_sub.add_parser("inspect", help="per-source counts, size and length percentiles, bad records")
    mixture_options(inspect_p)
    inspect_p.set_defaults(func=_cmd_data_inspect)
    prepare_p = data_sub.add_parser("prepare", help="write the checked mixture as Parquet shards")
    mixture_options(prepare_p)
    prepare_p.add_argument("--out")
    prepare_p.add_argument("--encoded", action="store_true", help="write model-ready columns, not canonical pairs")
    prepare_p.set_defaults(func=_cmd_data_prepare)

    ensemble = sub.add_parser("ensemble", help="fit an ensemble of reward models")
    ensemble_sub = ensemble.add_subparsers(dest="ensemble_command", required=True)
    fit = ensemble_sub.add_parser("fit", help="score validation pairs with each member and write ensemble.yaml")
    fit.add_argument("--models", nargs="+", metavar="NAME=PATH", help="reward checkpoints")
    fit.add_argument("--data", action="append", metavar="READER=PATH",
                     help="validation pairs: a benchmark or reader name = file (repeatable)")
    fit.add_argument("--method", choices=METHODS, help="aggregation (default mean)")
    fit.add_argument("--text-members", nargs="*", metavar="NAME",
                     help="route text-only inputs to these members only, image inputs to the others "
                          "(BaseReward routes text to a text reward model)")
    fit.add_argument("--image-root", help="folder the data's image paths are relative to")
    fit.add_argument("--batch-size", type=int)
    fit.add_argument("--limit", type=int, help="first N good pairs per data file")
    fit.add_argument("--out", help="where ensemble.yaml goes (default ./ensemble.yaml)")
    config_option(fit, "fit")
    fit.set_defaults(func=_cmd_ensemble_fit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; commands with a config also take trailing `a.b=value` settings (for the data commands
    a bare `max_length=4096` is a data setting)."""
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


def shim(job: str) -> None:
    """`python jobs/<job>.py ...` (what `ray job submit` runs): `mrm-ray <job> ...`."""
    sys.exit(main([job, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
