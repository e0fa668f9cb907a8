"""Label unlabelled records with a judge or an ensemble on Ray Data: `mrm-ray label`.

    ray job submit --working-dir . -- python jobs/label.py \
        --labeller judges.yaml --data unlabelled=s3://bucket/rollouts.jsonl --out s3://bucket/labels/ \
        [--min-margin 0.5] [--actors 8 --gpus-per-actor 1]

Writes preference pairs with their provenance (labeller, version, both-order agreement, margin) as
canonical Parquet parts under --out, what was dropped and why, a quarantine file and a summary; a
re-run skips the records already written. Train on them with a `canonical` mixture source.
"""

from mrm_ray.cli import shim

if __name__ == "__main__":
    shim("label")
