"""Evaluate reward models (and their ensembles) on published benchmarks with Ray Data.

    ray job submit --working-dir . -- python jobs/evaluate.py \
        --models qwen7b=/ckpt/qwen7b/reward_model internvl=/ckpt/internvl/reward_model \
        --bench vl_rewardbench=/data/vl_rewardbench_pairs.jsonl --bench mm_rlhf=/data/mm_rlhf_reward_bench.jsonl \
        --image-root /data/images --out eval-report/ [--ensemble ensemble.yaml] [--gpus-per-model 1]

Benchmarks: mm_rlhf, vl_rewardbench, multimodal_rewardbench, or any reader name (pairwise
accuracy per source). Writes report.json, report.md and scores.parquet (every pair's
scores) under --out.
"""

import argparse

from mrm_ray.ensemble import load_ensemble
from mrm_ray.eval.benchmarks import parse_named
from mrm_ray.eval.report import EvalOptions, evaluate, write_report
from mrm_ray.ray_session import connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[], help="NAME=PATH or PATH reward checkpoints")
    parser.add_argument("--ensemble", help="ensemble.yaml: its members (instead of --models), and its method, "
                                           "weights and routing as one more row")
    parser.add_argument("--bench", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--image-root", help="folder the benchmark image paths are relative to")
    parser.add_argument("--stand-in-images", help="use these photos where a benchmark image is missing (smoke runs)")
    parser.add_argument("--out", default="eval-report")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--actors-per-model", type=int, default=1)
    parser.add_argument("--gpus-per-model", type=float, default=0.0)
    parser.add_argument("--cpus-per-model", type=float, default=1.0)
    parser.add_argument("--limit", type=int, help="first N good pairs per benchmark")
    parser.add_argument("--methods", nargs="*", default=["mean", "z_mean"], choices=["mean", "z_mean"])
    args = parser.parse_args()
    ensemble = load_ensemble(args.ensemble) if args.ensemble else None
    members = dict(parse_named(m) for m in args.models)
    if not members and ensemble is None:
        parser.error("give --models or --ensemble")
    options = EvalOptions(image_root=args.image_root, stand_in_images=args.stand_in_images,
                          batch_size=args.batch_size, concurrency=args.actors_per_model, num_gpus=args.gpus_per_model,
                          num_cpus=args.cpus_per_model, limit=args.limit, methods=tuple(args.methods))
    connect()
    report, pairs = evaluate([parse_named(b) for b in args.bench], members, options=options, ensemble=ensemble)
    json_path, md_path = write_report(report, args.out, pairs=pairs)
    print(md_path.read_text())
    print(f"report: {json_path} and {md_path}")


if __name__ == "__main__":
    main()
