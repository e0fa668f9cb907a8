"""Cluster YAMLs pass Ray's own cluster-config validation (no cloud contacted), and the resources
training and serving ask for exist on the node types meant to run them."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from mrm_ray.config.shipped import path as shipped

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "cluster").glob("*.yaml"))}
PRESETS = ["qwen2_5_vl_3b", "qwen2_5_vl_7b", "qwen2_5_vl_32b", "qwen2_5_vl_72b"]


def _validate(config: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = copy.deepcopy(config)
    if config["provider"]["type"] != "fake_multinode":  # cloud YAMLs get their provider's defaults first
        config = prepare_config(config)
    validate_config(config)


def test_every_cluster_yaml_is_valid():
    assert set(CLUSTERS) == {"aws", "gcp", "local"}
    for name, config in CLUSTERS.items():
        _validate(config)
        assert config["head_node_type"] == "ray.head.default", name
        first = (ROOT / "cluster" / f"{name}.yaml").read_text().splitlines()[0]
        assert first.startswith(("# ray up", "# RAY_FAKE_CLUSTER=1 ray start")), name


@pytest.mark.parametrize("break_it", [
    lambda c: c.update(idle_timeout_minute=5),  # a typo'd key
    lambda c: c.update(max_workers="many"),
    lambda c: c["available_node_types"]["gpu.train.h100x8"].pop("node_config"),
])
def test_validation_catches_broken_configs(break_it):
    config = copy.deepcopy(CLUSTERS["aws"])
    break_it(config)
    with pytest.raises((jsonschema.ValidationError, ValueError, KeyError)):
        _validate(config)


def _types_with(config: dict, resource: str) -> list[str]:
    return [name for name, t in config["available_node_types"].items() if resource in t.get("resources", {})]


@pytest.mark.parametrize("preset", PRESETS)
def test_training_presets_land_on_the_training_node_type(preset):
    from mrm_ray.config import load_run_config

    run = load_run_config(preset, [])
    asks = run.train.resources_per_worker
    assert asks, f"{preset} must ask for the training accelerator"
    for name, config in CLUSTERS.items():
        for resource in asks:
            assert _types_with(config, resource) == ["gpu.train.h100x8"], (name, resource)
        if name != "local":  # 8 GPUs a node: the preset's workers fit the type's max_workers
            assert run.train.num_workers <= 8 * config["available_node_types"]["gpu.train.h100x8"]["max_workers"]


def test_serving_config_lands_on_the_serving_node_type():
    from ray.serve.schema import ServeDeploySchema

    from mrm_ray.config import AppArgs, validate

    raw = yaml.safe_load(shipped("serve", "cluster").read_text())
    (app,) = ServeDeploySchema.model_validate(raw).applications
    args = validate(AppArgs, app.args)
    serving = args.serving
    assert serving.num_gpus == 1 and serving.max_ongoing_requests >= 2 * serving.max_batch_size
    for name, config in CLUSTERS.items():
        for resource in serving.resources:
            (node_type,) = _types_with(config, resource)
            assert node_type.startswith("gpu.serve."), (name, node_type)
            units = config["available_node_types"][node_type]["resources"][resource]
            # one replica per GPU: each replica takes a whole unit, a node holds `units` of them
            assert serving.resources[resource] == 1 and units >= 1
            if name != "local":
                assert serving.autoscaling_config["max_replicas"] <= units * config["available_node_types"][
                    node_type]["max_workers"]
