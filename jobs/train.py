"""Train a reward model on Ray Train + DeepSpeed.

    ray job submit --working-dir . -- python jobs/train.py --config jobs/configs/tiny.yaml [key=value ...]
"""

import argparse

from mrm_ray.config import load_run_config
from mrm_ray.ray_session import connect
from mrm_ray.train.launch import run_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a run YAML (jobs/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="a.b=value", help="e.g. train.zero_stage=3 name=my-run")
    args = parser.parse_args()
    run = load_run_config(args.config, args.overrides)
    connect()
    summary = run_training(run)
    if summary.stopped:
        print(f"stopped at step {summary.final_step}/{summary.total_steps}: run the same command without "
              "train.stop_at_step to resume")
    else:
        print(f"reward checkpoint: {summary.checkpoint}")
    print(f"held-out accuracy: {summary.held_out_accuracy:.4f} (best checkpoint, step {summary.step})")
    print(f"run directory (metrics, TensorBoard, quarantine): {summary.run_dir}")


if __name__ == "__main__":
    main()
