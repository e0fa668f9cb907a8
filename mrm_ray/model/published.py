"""The published architectures of each family (model/families.py) as real config objects, with no download.

The memory plan counts parameters by building these configs' modules on the meta device
(shapes only), and `published_config_dir` writes a `config.json` that `model.random_init`
builds a full-size model from (random weights): enough to measure memory and speed of a run
before (or without) its checkpoint. Each architecture also carries the total its model card
states, which the tests compare with the module's count.
"""

from __future__ import annotations

import json
from pathlib import Path

from mrm_ray.atomic import atomic_file
from mrm_ray.model.families import FAMILIES, published_architecture

PUBLISHED = {name: family for family in FAMILIES.values() for name in family.published}  # name -> its family


def published_config_dict(name: str) -> dict:
    """The architecture fields of the published `config.json`."""
    family, p = published_architecture(name)
    return {"architectures": [family.generator], "model_type": family.model_types[0],
            "text_config": dict(p.text), "vision_config": dict(p.vision), "torch_dtype": "bfloat16", **p.top}


def published_config(name: str):
    """The family's config object of the published architecture."""
    family, _ = published_architecture(name)
    return family.transformers_class("config")(**published_config_dict(name))


def published_config_dir(name: str, out: str | Path) -> Path:
    """Write `out/config.json` for the published architecture (for `model.random_init`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "config.json", "w") as f:
        json.dump(published_config(name).to_dict(), f, indent=2, sort_keys=True)
    return out
