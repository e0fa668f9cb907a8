"""Deploy the reward ensemble on Ray Serve (it keeps serving after this job ends): `mrm-ray serve`.

    ray job submit --working-dir . -- python jobs/serve.py --config tiny [--ensemble ensemble.yaml] \
        [--name reward] [--route-prefix /]
"""

from mrm_ray.cli import shim

if __name__ == "__main__":
    shim("serve")
