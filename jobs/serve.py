"""Deploy the reward ensemble on Ray Serve (it keeps serving after this job ends).

    ray job submit --working-dir . -- python jobs/serve.py --config jobs/configs/serve_tiny.yaml \
        [--ensemble ensemble.yaml] [--name reward] [--route-prefix /]
"""

import argparse
import os

from mrm_ray.ray_session import connect
from mrm_ray.serve.deploy import deploy, load_serve_config, wait_forever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="jobs/configs/serve_tiny.yaml", help="a Serve config YAML")
    parser.add_argument("--ensemble", help="ensemble.yaml (from `mrm-ray ensemble fit`) replacing inline members")
    parser.add_argument("--name", help="application name (default: the config's)")
    parser.add_argument("--route-prefix", help="route prefix (default: the config's)")
    args = parser.parse_args()
    target = load_serve_config(args.config, ensemble=args.ensemble, name=args.name, route_prefix=args.route_prefix)
    connect()
    url = deploy(target)
    print(f"reward ensemble '{target.name}' serving at {url}  (POST {url}/v1/score, GET {url}/v1/models)")
    if not os.environ.get("RAY_ADDRESS"):  # not under `ray job submit`: the app lives as long as this process
        wait_forever(url)


if __name__ == "__main__":
    main()
