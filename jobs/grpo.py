"""GRPO on Ray against the served reward ensemble: `mrm-ray grpo`, as a script for `ray job submit`.

    ray job submit --working-dir . -- python jobs/grpo.py --config tiny [key=value ...]

Re-running with the same `name` resumes from the run's latest checkpoint.
"""

from mrm_ray.cli import shim

if __name__ == "__main__":
    shim("grpo")
