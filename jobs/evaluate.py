"""Evaluate reward models (and their ensembles) on published benchmarks with Ray Data: `mrm-ray evaluate`.

    ray job submit --working-dir . -- python jobs/evaluate.py \
        --models qwen7b=/ckpt/qwen7b/reward_model internvl=s3://bucket/internvl/reward_model \
        --bench vl_rewardbench=/data/vl_rewardbench_pairs.jsonl --bench mm_rlhf=/data/mm_rlhf_reward_bench.jsonl \
        --image-root /data/images --out eval-report/ [--ensemble ensemble.yaml] [--gpus-per-model 1]

Benchmarks: mm_rlhf, vl_rewardbench, multimodal_rewardbench, mmrb2 (each in its publishers'
own form: a save_to_disk folder, Parquet, or JSON/JSONL with images under --image-root), or
any reader name (pairwise accuracy per source). Writes report.json, report.md, report.html
and scores.parquet (every pair's scores) under --out, and prints the headline numbers next
to the paper's.
"""

from mrm_ray.cli import shim

if __name__ == "__main__":
    shim("evaluate")
