"""The jobs behind `mrm-ray train | evaluate | label | serve | grpo` (and the `jobs/*.py` shims).

Each job reads its config (a shipped name or a path, plus `a.b=value` overrides) and
validates it completely before Ray starts; then it runs here, on a fresh local Ray or the
cluster named by RAY_ADDRESS (as under `ray job submit`), or, given `--address
http://HEAD:8265`, is submitted to that cluster with the validated config and this
package's code (mrm_ray/submit.py) while its logs stream back.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from mrm_ray.config.commands import EQUAL_WEIGHT_METHODS
from mrm_ray.config.core import VIDEO_ROUTES

ADDRESS_HELP = ("submit to this Ray cluster's job server (e.g. http://HEAD:8265) and stream its logs; "
                "default: run here (on the cluster in RAY_ADDRESS, else a fresh local Ray)")


def named(items: list[str] | None) -> dict[str, str] | None:
    """`NAME=VALUE` (or a bare `PATH`, named after its last folder) items as a dict; None when not given."""
    from mrm_ray.eval.benchmarks import parse_named

    return None if items is None else dict(parse_named(item) for item in items)


def pairs(items: list[str] | None, what: str) -> dict[str, str] | None:
    """`NAME=VALUE` items as a dict (a ConfigError for one without `=`); None when not given."""
    from mrm_ray.config import ConfigError

    if items is None:
        return None
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{what} {item!r} must look like NAME=VALUE")
        out[name] = value
    return out


def _address_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help=ADDRESS_HELP)
    parser.add_argument("--check", action="store_true", help="validate the config, print it, and exit")


def _config_options(parser: argparse.ArgumentParser, what: str, example: str, func) -> None:
    parser.add_argument("--config", default="tiny", help=f"a {what}'s name (mrm-ray configs) or a YAML path")
    parser.add_argument("overrides", nargs="*", metavar="a.b=value", help=f"e.g. {example}")
    _address_option(parser)
    parser.set_defaults(func=func)


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def _checked_or_submitted(args: argparse.Namespace, job: str, config: dict) -> int | None:
    """--check: print the validated config; --address: submit the job with it as config.yaml. None: run here."""
    if args.check:
        print(_yaml(config), end="")
        return 0
    if args.address:
        from mrm_ray.submit import submit

        return submit(args.address, job, ["--config", "config.yaml"], files={"config.yaml": _yaml(config)})
    return None


# ------------------------------------------------------------------------------ train
def add_train(parser: argparse.ArgumentParser) -> None:
    _config_options(parser, "run preset", "train.zero_stage=3 name=my-run", run_train)


def check_early(check, *args, **kwargs) -> None:
    """A reference check (model/checkpoints.py) as a ConfigError: refused before Ray starts, exit code 2."""
    from mrm_ray.config import ConfigError

    try:
        check(*args, **kwargs)
    except (ValueError, OSError) as exc:
        raise ConfigError(str(exc)) from None


def run_train(args: argparse.Namespace) -> int:
    from mrm_ray.config import load_run_config, to_dict
    from mrm_ray.model import checkpoints

    run = load_run_config(args.config, args.overrides)
    if run.mixture:  # its sources and paths too, before anything starts
        from mrm_ray.data.mixture import load_mixture

        load_mixture(run.mixture, paths=run.mixture_paths)
    if not args.address and not run.model.random_init:  # on a cluster, its paths are the cluster's to read
        check_early(checkpoints.check, run.model.path, modalities=(), reward=False)
    if (done := _checked_or_submitted(args, "train", to_dict(run))) is not None:
        return done
    from mrm_ray.ray_session import connect
    from mrm_ray.train.launch import run_training

    connect()
    summary = run_training(run)
    if summary.stopped:
        print(f"stopped at step {summary.final_step}/{summary.total_steps}: run the same command without "
              "train.stop_at_step to resume")
    else:
        print(f"reward checkpoint: {summary.checkpoint}")
    print(f"held-out accuracy: {summary.held_out_accuracy:.4f} (best checkpoint, step {summary.step})")
    print(f"run directory (metrics, TensorBoard, quarantine, full log): {summary.run_dir}")
    return 0


# ------------------------------------------------------------------------------ grpo
def add_grpo(parser: argparse.ArgumentParser) -> None:
    _config_options(parser, "GRPO config", "steps=50 reward.url=http://...", run_grpo)


@contextlib.contextmanager
def _served_reward(cfg):
    """The GRPO config with `reward.url` set: `reward.members` deployed as an ensemble app for this run
    (taken down afterwards unless `reward.keep_deployed`), or the config as it is when it names a URL."""
    import dataclasses

    r = cfg.reward
    if r.url or not r.members:
        yield cfg
        return
    from mrm_ray.config import ConfigError
    from mrm_ray.serve.deploy import deploy_members, member_names

    app = f"{cfg.name}-reward"
    try:
        url = deploy_members(list(r.members), r.serve_config, name=app)
    except ConfigError:
        raise
    except ValueError as exc:  # a member that is not a reward checkpoint
        raise SystemExit(f"reward member: {exc}. Train one first (README: `mrm-ray train --config tiny`), "
                         "or set reward.members=[tiny:0] (a random tiny reward model) or reward.url=http://...")
    print(f"[grpo] reward ensemble {member_names(list(r.members))} serving at {url} (this job scores through "
          f"the app's handle, serve://{app})", flush=True)
    try:
        yield dataclasses.replace(cfg, reward=dataclasses.replace(r, url=f"serve://{app}"))
    finally:
        if not r.keep_deployed:  # what this run started, it takes down
            from ray import serve

            serve.delete(app)


def run_grpo(args: argparse.Namespace) -> int:
    from mrm_ray.config import load_grpo_config, to_dict
    from mrm_ray.model import checkpoints

    cfg = load_grpo_config(args.config, args.overrides)
    if not args.address:
        check_early(checkpoints.check, cfg.policy, modalities=(), reward=False)
    if (done := _checked_or_submitted(args, "grpo", to_dict(cfg))) is not None:
        return done
    from mrm_ray.ray_session import connect
    from mrm_ray.rl.loop import run_grpo as grpo

    connect()
    with _served_reward(cfg) as cfg:
        summary = grpo(cfg)
    curve = "  ".join(f"{p['step']}: {p[summary.reward_key]:+.4f}" for p in summary.curve)
    print(f"held-out {summary.reward_key} by step: {curve}")
    print(f"rise: {summary.rise:+.4f} ({summary.first:+.4f} -> {summary.last:+.4f}; "
          f"{summary.rise_in_standard_errors:.1f} standard errors of the held-out mean)")
    print(f"policy checkpoint: {summary.checkpoint}")
    print(f"run directory (summary.json, TensorBoard): {summary.run_dir}")
    if summary.stopped:
        print(f"stopped early: {summary.stopped}", file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------------------ serve
def add_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", help="a Serve config's name (mrm-ray configs) or a YAML path")
    parser.add_argument("--ensemble", help="ensemble.yaml (from `mrm-ray ensemble fit`; a path or s3:// URI) "
                                           "replacing inline members")
    parser.add_argument("--name", help="application name (default: the config's)")
    parser.add_argument("--route-prefix", help="route prefix (default: the config's)")
    parser.add_argument("--update", action="store_true",
                        help="apply the config to the app of that name already running (with --address, or "
                             "RAY_ADDRESS): members added, removed, re-weighted or swapped, another method, "
                             "while it keeps serving; returns when the change is done")
    _address_option(parser)
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mrm_ray.config import config_file, to_dict
    from mrm_ray.serve.deploy import deploy, load_target, wait_forever
    from mrm_ray.storage import is_uri

    target = load_target(args.config, ensemble=args.ensemble, name=args.name, route_prefix=args.route_prefix)
    if args.check:
        print(_yaml(_plain(to_dict(target))), end="")
        return 0
    if args.address:
        from mrm_ray.submit import submit

        extra = [f"--{k.replace('_', '-')}={v}" for k, v in (("name", args.name), ("route_prefix", args.route_prefix))
                 if v] + (["--update"] if args.update else [])
        if args.ensemble:
            extra.append(f"--ensemble={args.ensemble if is_uri(args.ensemble) else Path(args.ensemble).resolve()}")
        return submit(args.address, "serve", ["--config", "serve.yaml", *extra],
                      files={"serve.yaml": config_file("serve", args.config).read_text()})
    from mrm_ray.ray_session import connect

    if args.update and not os.environ.get("RAY_ADDRESS"):
        raise SystemExit("--update changes an app on a running cluster: pass --address http://HEAD:8265 "
                         "(or set RAY_ADDRESS)")
    connect(log_to_driver=not args.update)  # an update reports its outcome, not every replica's log
    if args.update:
        from mrm_ray.serve.deploy import update

        versions = update(target)
        print(f"update done: '{target.name}' now serves {target.args.ensemble_config().method} over "
              + ", ".join(f"{name} ({version})" for name, version in versions.items()), flush=True)
        return 0
    url = deploy(target)
    print(f"reward ensemble '{target.name}' serving at {url}  (POST {url}/v1/score, GET {url}/v1/models)")
    if not os.environ.get("RAY_ADDRESS"):  # not under `ray job submit`: the app lives as long as this process
        wait_forever(url)
    return 0


def _plain(data):
    """A config's dict with secrets shown as '**********' (what --check prints)."""
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    return str(data) if type(data).__name__ == "SecretStr" else data


# ------------------------------------------------------------------------------ evaluate
def add_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", help="NAME=REF or REF reward models (a path, an s3:// URI, or "
                                                    "tiny[:FAMILY][@SEED])")
    parser.add_argument("--ensemble", help="ensemble.yaml: its members (instead of --models), and its method, "
                                           "weights and routing as one more row")
    parser.add_argument("--bench", action="append", metavar="NAME=PATH",
                        help="a benchmark (mm_rlhf, vl_rewardbench, multimodal_rewardbench, mmrb2) or reader name = "
                             "its file (a path or s3:// URI)")
    parser.add_argument("--image-root", help="folder the benchmark image paths are relative to")
    parser.add_argument("--stand-in-images", help="use these photos where a benchmark image is missing (smoke runs)")
    parser.add_argument("--out", help="report folder, a run folder (a path or s3:// URI; default eval-report)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--actors-per-model", type=int)
    parser.add_argument("--gpus-per-model", type=float)
    parser.add_argument("--cpus-per-model", type=float)
    parser.add_argument("--limit", type=int, help="first N good pairs per benchmark")
    parser.add_argument("--methods", nargs="*", choices=EQUAL_WEIGHT_METHODS,
                        help=f"ensemble rows (default: {' '.join(EQUAL_WEIGHT_METHODS)})")
    parser.add_argument("--uncertainty-coef", type=float, help="of the uwo and lcb rows (default 0.5)")
    parser.add_argument("--video-route", choices=VIDEO_ROUTES,
                        help="how videos reach the models, one route for the run: video (the family's video "
                             "processor; needs torchvision), frames (each frame an image, in order), auto (video "
                             "where it loads; the default)")
    parser.add_argument("--config", help="a YAML file of the evaluation's settings (config/commands.py's EvalConfig)")
    parser.add_argument("--address", help=ADDRESS_HELP)
    parser.set_defaults(func=run_evaluate, overrides=[])


def run_evaluate(args: argparse.Namespace) -> int:
    from mrm_ray.config import EvalConfig, load, to_dict
    from mrm_ray.ensemble import load_ensemble
    from mrm_ray.eval.markdown import summary
    from mrm_ray.eval.report import evaluate, write_report
    from mrm_ray.model import checkpoints

    config = load(EvalConfig, args.config, args.overrides, values={
        "models": named(args.models), "ensemble": args.ensemble, "bench": named(args.bench),
        "image_root": args.image_root, "stand_in_images": args.stand_in_images, "out": args.out,
        "batch_size": args.batch_size, "actors_per_model": args.actors_per_model,
        "gpus_per_model": args.gpus_per_model, "cpus_per_model": args.cpus_per_model, "limit": args.limit,
        "methods": args.methods, "uncertainty_coef": args.uncertainty_coef, "video_route": args.video_route})
    if args.address:  # its paths are read (and checked) on the cluster
        from mrm_ray.submit import submit

        return submit(args.address, "evaluate", ["--config", "config.yaml"],
                      files={"config.yaml": _yaml(to_dict(config))})
    # refused before Ray starts: no reward model; a text-only member an ensemble file routes images
    if config.ensemble is not None:
        check_early(checkpoints.check_members, load_ensemble(config.ensemble).members)
    for name, path in config.models.items():  # any family: a text-only one scores the text pairs
        check_early(checkpoints.check, path, modalities=(), name=name)
    from mrm_ray.logs import no_progress_bars
    from mrm_ray.ray_session import connect
    from mrm_ray.run_folder import RunFolder

    no_progress_bars()
    RunFolder(config.out).route_logs("driver")
    connect()
    report, pairs = evaluate(config)
    written = write_report(report, config.out, pairs=pairs, tracking=config.tracking)
    print(summary(report))
    print("report: " + ", ".join(written.values()))
    if empty := [name for name, bench in report["benchmarks"].items() if "message" in bench]:
        print(f"nothing scored on {', '.join(empty)} (see above); the other benchmarks are in the report",
              file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------ label
def add_label(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labeller", help="ensemble.yaml whose members label: reward models and judges "
                                           "(a judge alone is an ensemble of one member)")
    parser.add_argument("--data", action="append", metavar="READER=PATH",
                        help="records to label: unlabelled=FILE (a prompt, its images, two or more responses) or any "
                             "reader or benchmark name = its file (its preference ignored); repeatable")
    parser.add_argument("--out", help="output folder (a path or s3:// URI; default labels); a re-run skips what it holds")
    parser.add_argument("--min-margin", type=float, help="drop labels whose |margin| is below this (default 0: ties)")
    parser.add_argument("--image-root", help="folder the records' image file names are relative to")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--actors", type=int, help="labelling actors, each holding every member (default 1)")
    parser.add_argument("--gpus-per-actor", type=float)
    parser.add_argument("--cpus-per-actor", type=float)
    parser.add_argument("--limit", type=int, help="first N good records per data file")
    parser.add_argument("--config", help="a YAML file of the labelling's settings (config/commands.py's LabelConfig)")
    parser.add_argument("--address", help=ADDRESS_HELP)
    parser.set_defaults(func=run_label, overrides=[])


def run_label(args: argparse.Namespace) -> int:
    from mrm_ray.config import LabelConfig, load, to_dict
    from mrm_ray.ensemble import load_ensemble
    from mrm_ray.model import checkpoints

    config = load(LabelConfig, args.config, args.overrides, values={
        "labeller": args.labeller, "data": named(args.data), "out": args.out, "min_margin": args.min_margin,
        "image_root": args.image_root, "batch_size": args.batch_size, "actors": args.actors,
        "gpus_per_actor": args.gpus_per_actor, "cpus_per_actor": args.cpus_per_actor, "limit": args.limit})
    if args.address:
        from mrm_ray.submit import submit

        return submit(args.address, "label", ["--config", "config.yaml"], files={"config.yaml": _yaml(to_dict(config))})
    for m in load_ensemble(config.labeller).members:  # any family: a text-only member labels the text records
        check_early(checkpoints.check, m.path, modalities=(), name=m.name, reward=m.kind == "scalar")
    from mrm_ray.eval.label import label
    from mrm_ray.logs import no_progress_bars
    from mrm_ray.ray_session import connect

    no_progress_bars()
    connect()
    summary = label(config)
    dropped = ", ".join(f"{n} {why}" for why, n in summary["dropped"].items()) or "none"
    print(f"labelled {summary['records_labelled']} records into {summary['pairs']} pairs (dropped: {dropped}; "
          f"skipped as already written: {summary['records_skipped_as_written']}; quarantined: "
          f"{sum(summary['quarantined'].values())}); wrote {config.out}")
    return 0


JOBS = {"train": (add_train, "train a reward model on Ray Train + DeepSpeed"),
        "evaluate": (add_evaluate, "evaluate reward models (and ensembles) on published benchmarks"),
        "label": (add_label, "label unlabelled records with a judge or an ensemble, as preference pairs"),
        "serve": (add_serve, "deploy the reward ensemble on Ray Serve"),
        "grpo": (add_grpo, "GRPO against the served reward ensemble")}
