"""`python -m mrm_ray ...` is the `mrm-ray` command (what jobs submitted to a cluster run)."""

import sys

from mrm_ray.cli import main

sys.exit(main())
