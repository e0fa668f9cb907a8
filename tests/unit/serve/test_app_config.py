"""The shipped Serve config validates with Serve's own schema and builds an application; no Ray here."""


import pytest
import yaml

from mrm_ray.config.shipped import path as shipped
from mrm_ray.config import EnsembleConfig, EnsembleMember
from mrm_ray.ensemble import save_ensemble
from mrm_ray.config import AppArgs, to_dict, validate
from mrm_ray.serve.app import build_app

CONFIG = shipped("serve", "tiny")


def test_shipped_config_matches_serves_schema_and_builds():
    from ray.serve.schema import ServeDeploySchema

    text = CONFIG.read_text()
    assert text.startswith("# mrm-ray serve --config tiny")
    schema = ServeDeploySchema.model_validate(yaml.safe_load(text))
    (app,) = schema.applications
    assert app.import_path == "mrm_ray.serve.app:build_app" and schema.http_options.host == "127.0.0.1"
    args = validate(AppArgs, app.args)
    assert [m.name for m in args.ensemble_config().members] == ["tiny-a", "tiny-b"]
    assert args.serving.max_ongoing_requests >= args.serving.max_batch_size  # Serve's default 5 would cap batches
    assert build_app(app.args) is not None


def test_ensemble_file_members_and_method_override(tmp_path):
    path = save_ensemble(EnsembleConfig(members=[EnsembleMember(name="a", path="m/a"),
                                                 EnsembleMember(name="b", path="m/b", modalities=("text",))],
                                        method="z_mean"), tmp_path / "ensemble.yaml")
    config = AppArgs(ensemble=str(path)).ensemble_config()
    assert config.method == "z_mean" and config.members[0].path == str(tmp_path / "m" / "a")
    assert AppArgs(ensemble=str(path), method="mean").ensemble_config().method == "mean"
    with pytest.raises(ValueError, match="either"):
        AppArgs(ensemble=str(path), members=[{"name": "c", "path": "x"}]).ensemble_config()
    with pytest.raises(ValueError, match="no members"):
        AppArgs().ensemble_config()


def test_token_never_shows_in_reprs():
    args = AppArgs(members=[{"name": "a", "path": "tiny:0"}], auth_token="s3cret-token")
    assert "s3cret" not in repr(args) and "s3cret" not in str(to_dict(args))
    with pytest.raises(ValueError):
        AppArgs(members=[{"name": "a", "path": "x"}], servng={})  # typos are errors, not silently ignored


def test_job_deploy_applies_env_vars_and_refuses_a_runtime_env_it_cannot_apply(tmp_path):
    from mrm_ray.serve.deploy import load_target

    config = yaml.safe_load(CONFIG.read_text())
    save_ensemble(EnsembleConfig(members=[EnsembleMember(name="a", path="tiny:0")]), tmp_path / "e.yaml")
    target = load_target("tiny", ensemble=str(tmp_path / "e.yaml"), name="x", route_prefix="/x")
    assert not target.args.members and target.args.method is None and target.args.ensemble.endswith("e.yaml")
    assert target.logging_config == {"enable_access_log": False} and target.http_options["host"] == "127.0.0.1"
    config["applications"][0]["runtime_env"] = {"env_vars": {"MRM_SERVE_TOKEN": "t"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert load_target(tmp_path / "c.yaml").runtime_env == {"env_vars": {"MRM_SERVE_TOKEN": "t"}}
    config["applications"][0]["runtime_env"]["pip"] = ["requests"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="runtime_env.env_vars"):
        load_target(tmp_path / "c.yaml")


def test_a_serve_config_is_validated_before_anything_is_deployed(tmp_path):
    from mrm_ray.config import ConfigError
    from mrm_ray.serve.deploy import load_target

    config = yaml.safe_load(CONFIG.read_text())
    config["applications"][0]["args"]["serving"]["max_batch_sise"] = 8
    config["applications"][0]["args"]["limits"] = {"max_items": "many"}
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as caught:
        load_target(tmp_path / "typo.yaml")
    assert "args.serving.max_batch_sise: unknown setting; did you mean max_batch_size?" in str(caught.value)
    assert "args.limits.max_items" in str(caught.value)
    config = yaml.safe_load(CONFIG.read_text())
    config["applications"][0]["args"]["members"][0]["path"] = str(tmp_path / "not-a-checkpoint")
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="extra_forbidden|not a reward checkpoint|tiny"):
        load_target(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="no serve config 'nope'.*tiny"):
        load_target("nope")


def test_member_calls_hold_at_most_a_batch_of_responses_and_split_big_groups():
    from mrm_ray.serve.calls import member_calls

    inputs = [{"prompt": "a", "images": [], "responses": ["1", "2", "3"]},
              {"prompt": "b", "images": [], "responses": ["4"]},
              {"prompt": "c", "images": [], "responses": ["5", "6", "7", "8", "9"]}]
    calls = member_calls(inputs, [0, 1, 2], 4, "score")
    assert [units for units, _ in calls] == [[(0, 0), (0, 1), (0, 2), (1, 0)], [(2, 0), (2, 1), (2, 2), (2, 3)],
                                             [(2, 4)]]
    assert [[(g["prompt"], g["responses"]) for g in payload] for _, payload in calls] == [
        [("a", ["1", "2", "3"]), ("b", ["4"])], [("c", ["5", "6", "7", "8"])], [("c", ["9"])]]
    pairs = [{"prompt": str(i)} for i in range(5)]
    assert [len(p) for _, p in member_calls(pairs, [0, 2, 3, 4], 3, "compare")] == [3, 1]


def _ingress_options(app):
    return app._bound_deployment._deployment_config  # what Serve deploys the ingress with


def test_ingress_admission_is_the_members_batch_capacity_unless_set():
    """The ingress admits one batch round of the members (largest max_batch_size x replicas, max_replicas when
    autoscaling) and the proxy holds as many again; explicit limits win; the built app carries them."""
    members = [{"name": "a", "path": "tiny:0"},
               {"name": "b", "path": "tiny:1", "serving": {"max_batch_size": 8, "num_replicas": 3}}]
    args = validate(AppArgs, {"members": members, "serving": {"max_batch_size": 16, "num_replicas": 1}})
    assert args.ingress_admission(args.ensemble_config().members) == (24, 24)  # b: 8 x 3 replicas
    autoscaled = validate(AppArgs, {"members": members[:1], "serving": {
        "max_batch_size": 16, "autoscaling_config": {"min_replicas": 1, "max_replicas": 5}}})
    assert autoscaled.ingress_admission(autoscaled.ensemble_config().members) == (80, 80)
    shipped_args = yaml.safe_load(CONFIG.read_text())["applications"][0]["args"]
    config = _ingress_options(build_app(shipped_args))
    assert (config.max_ongoing_requests, config.max_queued_requests) == (16, 16)  # the tiny app: 16 x 1
    assert config.backpressure_config.status_code == 503 and config.backpressure_config.retry_after_s == 1.0
    set_ = {**shipped_args, "ingress": {"max_ongoing_requests": 200, "max_queued_requests": 100}}
    config = _ingress_options(build_app(set_))
    assert (config.max_ongoing_requests, config.max_queued_requests) == (200, 100)
