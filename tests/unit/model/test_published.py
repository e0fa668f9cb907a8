"""Published Qwen2.5-VL architectures: real config objects whose models the plan counts right."""

import json

import pytest
import torch

from mrm_ray.model.published import PUBLISHED, published_config, published_config_dir
from mrm_ray.train.plan import text_params, vision_params


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_plan_counts_the_parameters_of_the_real_module(name):
    from transformers import Qwen2_5_VLModel

    with torch.device("meta"):  # shapes only: no memory, no init
        model = Qwen2_5_VLModel._from_config(published_config(name))
    real = sum(p.numel() for p in model.parameters())
    planned = text_params(PUBLISHED[name]) + vision_params(PUBLISHED[name]["hidden"])
    assert planned == pytest.approx(real, rel=1e-3)
    assert model.config.text_config.hidden_size == PUBLISHED[name]["hidden"]
    assert model.config.vision_config.out_hidden_size == PUBLISHED[name]["hidden"]


def test_config_dir_round_trips_with_the_real_token_ids(tmp_path):
    from transformers import Qwen2_5_VLConfig

    out = published_config_dir("qwen2_5_vl_3b", tmp_path / "3b")
    config = Qwen2_5_VLConfig.from_pretrained(out)
    assert (config.image_token_id, config.vision_start_token_id, config.text_config.eos_token_id) == \
        (151655, 151652, 151645)
    assert config.text_config.num_hidden_layers == 36 and config.vision_config.depth == 32
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    with pytest.raises(KeyError, match="known"):
        published_config("qwen2_5_vl_9b")
