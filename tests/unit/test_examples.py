"""The runnable examples (examples/), checked as far as this machine allows: the OpenRLHF launch's flags against
the installed OpenRLHF's own parser and its environment against our agent's settings, the veRL launch's settings
against veRL's own generated trainer config and our reward function's settings, the custom mixture read by its
readers, and the two-member ensemble through Serve's schema, the app builder and the member checks. The peers are
installed with --no-deps (.ci/run): their GPU stacks do not import here, so their launchers are not run."""

import ast
import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is not installed (.ci/run installs it with --no-deps)")
    return Path(spec.origin).parent / relative


def _script_words(name: str) -> list[str]:
    text = (EXAMPLES / name).read_text()
    body = re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return shlex.split(body, comments=True)


def test_openrlhf_launch_uses_only_flags_openrlhf_defines():
    source = _package_file("openrlhf", "cli/train_ppo_ray.py").read_text()
    defined = {node.args[0].value for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args
               and isinstance(node.args[0], ast.Constant)}
    words = _script_words("openrlhf_grpo.sh")
    launched = words[words.index("openrlhf.cli.train_ppo_ray") + 1:]
    flags = [w for w in launched if w.startswith("--")]
    assert {"--train.agent_func_path", "--rollout.n_samples_per_prompt", "--data.image_key"} <= set(flags)
    assert not set(flags) - defined, sorted(set(flags) - defined)
    # the agent's environment, as the script sets it, is valid for our executor
    from mrm_ray.config import OpenRLHFAgentConfig

    env = json.loads(words[words.index("--runtime-env-json") + 1].replace("$REWARD_URL", "http://127.0.0.1:8000"))
    config = OpenRLHFAgentConfig.from_env(**{k: env["env_vars"][v] for k, v in OpenRLHFAgentConfig.ENV.items()
                                             if v in env["env_vars"]})
    assert config.group_size == 8 == int(launched[launched.index("--rollout.n_samples_per_prompt") + 1])
    assert config.reward == "hybrid" and config.method == "uwo"


def _has_path(tree: dict, dotted: str) -> bool:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_verl_launch_sets_settings_verl_has_and_our_function_takes():
    generated = yaml.safe_load(_package_file("verl", "trainer/config/_generated_ppo_trainer.yaml").read_text())
    words = _script_words("verl_grpo.sh")
    settings = dict(w.split("=", 1) for w in words[words.index("verl.trainer.main_ppo") + 1:] if "=" in w)
    assert settings["reward.custom_reward_function.name"] == "compute_score_async"
    for key in settings:
        if key.startswith("+"):  # an addition: its parent must exist
            assert _has_path(generated, key[1:].rsplit(".", 2)[0]), key
        else:
            assert _has_path(generated, key), key
    import inspect

    import mrm_ray.rl.verl as verl
    from mrm_ray.config import VerlReward, validate

    assert inspect.iscoroutinefunction(getattr(verl, settings["reward.custom_reward_function.name"]))
    prefix = "+reward.custom_reward_function.reward_kwargs."
    kwargs = {k[len(prefix):]: v.replace("$REWARD_URL", "http://127.0.0.1:8000") for k, v in settings.items()
              if k.startswith(prefix)}
    assert validate(VerlReward, kwargs).method == "uwo"


def test_custom_mixture_reads_every_pair_of_its_real_sources(shared_data):
    from mrm_ray.config import MixtureConfig, load
    from mrm_ray.data.quarantine import Rejected
    from mrm_ray.data.readers import get_reader

    mixture = load(MixtureConfig, EXAMPLES / "custom_mixture.yaml")
    counts = {}
    for source in mixture.sources:
        rows = list(get_reader(source.reader)(source.path, source=source.name, **source.options))
        assert not [r for r in rows if isinstance(r, Rejected)], source.name
        counts[source.name] = rows
    assert len(counts["rlaif-v"]) == 10 and all(r["images"] for r in counts["rlaif-v"])
    assert len(counts["dpo-en-demo"]) == 300 and not any(r["images"] for r in counts["dpo-en-demo"])
    assert [s.weight for s in mixture.sources] == ["all", 100] and mixture.held_out_fraction == 0.1


def test_two_member_ensemble_validates_builds_and_routes_text_to_the_text_member():
    from ray.serve.schema import ServeDeploySchema

    from mrm_ray.config import AppArgs, validate
    from mrm_ray.model import checkpoints
    from mrm_ray.serve.app import build_app

    raw = yaml.safe_load((EXAMPLES / "two_member_ensemble.yaml").read_text())
    (app,) = ServeDeploySchema.model_validate(raw).applications
    args = validate(AppArgs, app.args)
    members = args.ensemble_config().members
    assert [(m.name, m.modalities) for m in members] == [("vision", ("image",)), ("text", ("text",))]
    checkpoints.check_members(members)  # each member can score what it is routed (builds the tiny ones)
    assert build_app(app.args) is not None and args.ensemble_config().method == "uwo"


def test_judge_labeller_and_unlabelled_records_load_and_the_label_command_parses():
    from mrm_ray.cli import build_parser
    from mrm_ray.data.quarantine import Rejected
    from mrm_ray.data.readers.unlabelled import read_unlabelled
    from mrm_ray.ensemble import load_ensemble
    from mrm_ray.model import checkpoints

    ensemble = load_ensemble(EXAMPLES / "judge_labeller.yaml")
    assert [(m.name, m.kind, m.judge.mode) for m in ensemble.members] == [("rm", "scalar", "verdict"),
                                                                         ("judge", "judge", "verdict")]
    checkpoints.check_members(ensemble.members)  # the reward model is one, the judge any checkpoint
    records = list(read_unlabelled(EXAMPLES / "unlabelled.jsonl"))
    assert not any(isinstance(r, Rejected) for r in records) and [len(r["responses"]) for r in records] == [3, 2, 2]
    readme = (EXAMPLES / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("mrm-ray label"))
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.labeller == "examples/judge_labeller.yaml" and args.data == ["unlabelled=examples/unlabelled.jsonl"]
