"""Train a reward model on Ray Train + DeepSpeed: `mrm-ray train`, as a script for `ray job submit`.

    ray job submit --working-dir . -- python jobs/train.py --config tiny [key=value ...]
"""

from mrm_ray.cli import shim

if __name__ == "__main__":
    shim("train")
