"""GRPO on Ray: rollout actors sample from a Qwen2.5-VL policy, the served reward ensemble scores them.

    ray job submit --working-dir . -- python jobs/grpo.py --config jobs/configs/grpo_tiny.yaml [key=value ...]

Re-running with the same `name` resumes from the run's latest checkpoint.
"""

import argparse
import sys

from mrm_ray.ray_session import connect
from mrm_ray.rl.config import load_grpo_config
from mrm_ray.rl.loop import run_grpo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a GRPO YAML (jobs/configs/grpo_*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="a.b=value", help="e.g. steps=50 reward.url=http://...")
    args = parser.parse_args()
    cfg = load_grpo_config(args.config, args.overrides)
    connect()
    summary = run_grpo(cfg)
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


if __name__ == "__main__":
    sys.exit(main())
