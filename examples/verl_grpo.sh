#!/usr/bin/env bash
# veRL (0.9) GRPO rewarded by the mrm-ray ensemble, through its reward loop's custom reward function.
#
#   mrm-ray serve --config examples/two_member_ensemble.yaml --address http://HEAD:8265   # the reward app
#   REWARD_URL=http://HOST:8000 bash examples/verl_grpo.sh data.train_files=... actor_rollout_ref.model.path=...
#
# `compute_score_async` sends each sample to /v1/score (its prompt and images read from extra_info["raw_prompt"]):
# `score` is the hybrid reward against the ground truth, and the ensemble reward, its disagreement and every
# member's score come back as extra keys, which veRL logs. `method=uwo` optimises the conservative aggregate.
# CI checks every setting below against veRL's own generated trainer config (tests/unit/test_examples.py).
set -euo pipefail
REWARD_URL=${REWARD_URL:-http://127.0.0.1:8000}
REWARD_FN=$(python -c 'import mrm_ray.rl.verl as m; print(m.__file__)')

python3 -m verl.trainer.main_ppo \
  algorithm.adv_estimator=grpo \
  actor_rollout_ref.rollout.n=8 \
  reward.custom_reward_function.path="$REWARD_FN" \
  reward.custom_reward_function.name=compute_score_async \
  +reward.custom_reward_function.reward_kwargs.url="$REWARD_URL" \
  +reward.custom_reward_function.reward_kwargs.reward=hybrid \
  +reward.custom_reward_function.reward_kwargs.method=uwo \
  "$@"
