"""The policy samples what its log-probs say, never an image placeholder, in every family; the
learner's update moves the policy toward rewarded responses; checkpoints resume exactly."""

import dataclasses

import numpy as np
import pytest
import torch

from mrm_ray.model.families import TINY_FAMILIES
from mrm_ray.rl.actors import Learner, RolloutWorker
from mrm_ray.rl.grpo import group_advantages
from mrm_ray.config import load_grpo_config
from mrm_ray.rl.policy import Policy
from mrm_ray.rl.prompts import synthetic_prompts

TEXT_ONLY = ("qwen2", "qwen3")


@pytest.fixture(scope="module")
def prompts():
    return synthetic_prompts(6, seed=3)


def _family_prompts(family, n=6):
    return synthetic_prompts(n, seed=3, task="colour_text" if family in TEXT_ONLY else "colour")


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_sampled_tokens_have_the_log_probs_the_learner_computes(family_checkpoint, family):
    policy = Policy(str(family_checkpoint(family)))
    prompt = _family_prompts(family)[0]
    features = policy.encode_prompt(prompt["prompt"], prompt["images"])
    inputs = policy._prompt_tensors(features, 1)
    out = policy.model.generate(**inputs, max_new_tokens=6, do_sample=False, output_scores=True,
                                return_dict_in_generate=True, suppress_tokens=policy.suppressed,
                                eos_token_id=policy.end_id, pad_token_id=policy.pad_id)
    response = out.sequences[0, inputs["input_ids"].shape[1]:]
    from_generate = torch.stack([torch.log_softmax(s[0], -1)[t] for s, t in zip(out.scores, response)])
    batch = policy.group_batch(features, [response.numpy()])
    torch.testing.assert_close(policy.logprobs(batch)[0, : len(response)], from_generate, rtol=0, atol=1e-4)


def test_no_special_token_is_ever_sampled_and_responses_stop_at_im_end(tiny_checkpoint, prompts):
    policy = Policy(str(tiny_checkpoint))
    features = policy.encode_prompt(prompts[1]["prompt"], prompts[1]["images"])
    torch.manual_seed(0)
    responses = policy.sample(features, 64, max_new_tokens=16, temperature=1.5)  # ~1,000 tokens
    tokens = np.concatenate(responses)
    assert len(tokens) > 500 and not set(tokens.tolist()) & set(policy.suppressed)
    assert all(policy.end_id not in r[:-1] for r in responses)
    batch = policy.group_batch(features, responses)
    assert batch["response_mask"].sum().item() == len(tokens)


def _cfg(tiny_checkpoint, tmp_path, **kw):
    overrides = [f"policy={tiny_checkpoint}", f"output_dir={tmp_path}", "rollout.group_size=8", "optim.minibatches=2",
                 "optim.learning_rate=5e-3", "optim.kl_coef=0.0", "learner_cpus=2"]
    return load_grpo_config(None, overrides + [f"{k}={v}" for k, v in kw.items()])


def test_updates_move_the_policy_toward_rewarded_responses(tiny_checkpoint, prompts, tmp_path):
    """Reward = share of a response's tokens in a fixed eighth of the vocabulary: it must rise."""
    cfg = _cfg(tiny_checkpoint, tmp_path)
    learner = Learner(dataclasses.asdict(cfg), checkpoint=None, device="cpu")
    liked = set(range(0, learner.policy.end_id, 8))

    def reward(r):
        return float(np.mean([t in liked for t in r]))

    feats = [learner.policy.encode_prompt(p["prompt"], p["images"]) for p in prompts[:4]]

    def mean_reward(seed):
        torch.manual_seed(seed)
        return np.mean([reward(r) for f in feats for r in learner.policy.sample(f, 16, max_new_tokens=6)])

    before = mean_reward(123)
    for step in range(12):
        torch.manual_seed(step)
        groups = [{"responses": learner.policy.sample(f, 8, max_new_tokens=6)} for f in feats]
        metrics = learner.update(prompts[:4], groups, [[reward(r) for r in g["responses"]] for g in groups])
        assert metrics["finite"]
    after = mean_reward(123)
    assert after > before + 0.15, (before, after)
    assert learner.step == 12


def test_rollouts_not_kept_get_zero_advantage(tiny_checkpoint, prompts, tmp_path):
    """reward.max_disagreement's filter: a rollout with keep=False pushes nothing; none kept leaves the policy
    where it was (its KL to the reference is 0 on the first step too)."""
    cfg = _cfg(tiny_checkpoint, tmp_path)
    learner = Learner(dataclasses.asdict(cfg), checkpoint=None, device="cpu")
    feats = learner.policy.encode_prompt(prompts[0]["prompt"], prompts[0]["images"])
    torch.manual_seed(0)
    group = {"responses": learner.policy.sample(feats, 8, max_new_tokens=4)}
    rewards = [[float(i % 3) for i in range(8)]]
    before = {k: v.clone() for k, v in learner.policy.model.state_dict().items()}
    none = learner.update(prompts[:1], [group], rewards, keep=[[False] * 8])
    assert none["advantage_abs"] == 0.0
    for name, value in learner.policy.model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)
    half = learner.update(prompts[:1], [group], rewards, keep=[[i < 4 for i in range(8)]])
    full = group_advantages(torch.tensor(rewards[0]), 8).abs()
    assert half["advantage_abs"] == pytest.approx(float(full[:4].sum() / 8), rel=1e-5)
    assert any(not torch.equal(v, before[k]) for k, v in learner.policy.model.state_dict().items())


def test_checkpoint_resumes_weights_optimizer_and_step_with_the_original_reference(tiny_checkpoint, prompts,
                                                                                   tmp_path):
    cfg = _cfg(tiny_checkpoint, tmp_path)
    learner = Learner(dataclasses.asdict(cfg), checkpoint=None, device="cpu")
    feats = learner.policy.encode_prompt(prompts[0]["prompt"], prompts[0]["images"])
    torch.manual_seed(0)
    group = {"responses": learner.policy.sample(feats, 8, max_new_tokens=4)}
    learner.update(prompts[:1], [group], [[float(i % 3) for i in range(8)]])
    saved = learner.save(str(tmp_path / "ckpt"))
    resumed = Learner(dataclasses.asdict(cfg), checkpoint=saved, device="cpu")
    assert resumed.step == 1
    for (name, a), (_, b) in zip(learner.policy.model.state_dict().items(), resumed.policy.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for (_, a), (_, b) in zip(learner.reference.state_dict().items(), resumed.reference.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the reference is the starting policy, not the checkpoint
    moved = any(not torch.equal(a, b) for a, b in zip(learner.policy.model.parameters(), learner.reference.parameters()))
    assert moved
    state = resumed.optimizer.state_dict()["state"]
    assert state and all(int(s["step"]) == 1 for s in state.values())


@pytest.mark.parametrize("family", [f for f in TINY_FAMILIES if f != "qwen2_5_vl"])  # the default: test_grpo
def test_every_family_runs_the_grpo_actors_round(family_checkpoint, family, tmp_path):
    """A rollout worker samples a group with the learner's weights, the learner updates on its rewards,
    and the worker takes the new weights: the round `mrm-ray grpo` runs, in each family."""
    path = str(family_checkpoint(family))
    cfg = _cfg(path, tmp_path, **{"rollout.group_size": 4, "optim.minibatches": 1})
    learner = Learner(dataclasses.asdict(cfg), checkpoint=None, device="cpu")
    worker = RolloutWorker(path, dtype="float32", max_pixels=None, cpus=1, device="cpu")
    prompts = _family_prompts(family, 2)
    version, state = learner.state()
    worker.set_weights(version, state)
    groups = [worker.rollout(p, n=4, seed=i, version=version, max_new_tokens=4, temperature=1.0, top_p=1.0)
              for i, p in enumerate(prompts)]
    assert all(len(g["responses"]) == 4 and len(g["texts"]) == 4 for g in groups)
    metrics = learner.update(prompts, groups, [[float(len(r)) + i for i, r in enumerate(g["responses"])]
                                               for g in groups])
    assert metrics["finite"] and learner.step == 1 and metrics["grad_norm"] > 0
    version, state = learner.state()
    assert worker.set_weights(version, state) == 1
    for (name, a), b in zip(worker.policy.model.state_dict().items(), state.values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_a_text_only_policy_is_refused_prompts_with_images_before_any_actor_starts(family_checkpoint):
    from mrm_ray.rl.loop import check_prompts

    check_prompts(str(family_checkpoint("qwen3")), _family_prompts("qwen3"))  # text prompts: fine
    check_prompts(str(family_checkpoint("qwen3_vl")), synthetic_prompts(2))
    with pytest.raises(ValueError, match=r"text-only model and 2 of the 2 prompts show images.*prompts.task=colour_text"):
        check_prompts(str(family_checkpoint("qwen3")), synthetic_prompts(2))
