"""Published architectures: real config objects of each family that round-trip through config.json."""

import json

import pytest

from mrm_ray.model.published import PUBLISHED, published_config, published_config_dir


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_every_published_architecture_is_its_familys_config(name):
    config = published_config(name)
    family = PUBLISHED[name]
    assert type(config).__name__ == family.config
    assert config.vision_config.out_hidden_size == config.text_config.hidden_size
    assert config.image_token_id is not None and config.vision_start_token_id is not None


def test_config_dir_round_trips_with_the_real_token_ids(tmp_path):
    from transformers import AutoConfig, Qwen2_5_VLConfig, Qwen3_5Config

    out = published_config_dir("qwen2_5_vl_3b", tmp_path / "3b")
    config = Qwen2_5_VLConfig.from_pretrained(out)
    assert (config.image_token_id, config.vision_start_token_id, config.text_config.eos_token_id) == \
        (151655, 151652, 151645)
    assert config.text_config.num_hidden_layers == 36 and config.vision_config.depth == 32
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    qwen3_5 = AutoConfig.from_pretrained(published_config_dir("qwen3_5_9b", tmp_path / "9b"))
    assert isinstance(qwen3_5, Qwen3_5Config) and qwen3_5.image_token_id == 248056
    assert qwen3_5.text_config.layer_types[:4] == ["linear_attention"] * 3 + ["full_attention"]
    with pytest.raises(KeyError, match="known"):
        published_config("qwen2_5_vl_9b")
