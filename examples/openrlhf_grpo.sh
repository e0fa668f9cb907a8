#!/usr/bin/env bash
# OpenRLHF (0.11) GRPO on a vision-language policy, rewarded by the mrm-ray ensemble.
#
#   mrm-ray serve --config examples/two_member_ensemble.yaml --address http://HEAD:8265   # the reward app
#   REWARD_URL=http://HOST:8000 POLICY=Qwen/Qwen2.5-VL-3B-Instruct DATA=/data/prompts bash examples/openrlhf_grpo.sh
#
# Image rollouts go through our agent executor (mrm_ray/rl/openrlhf_agent.py): it generates as OpenRLHF's own
# single-turn executor does and sends the prompt's turns, its images and the response to /v1/score, a prompt's 8
# responses as one request. For text-only rollouts, drop --train.agent_func_path and the MRM_* variables and pass
# --reward.remote_url "$REWARD_URL/get_reward?method=uwo" instead. CI checks every flag below against the
# installed OpenRLHF's own parser (tests/unit/test_examples.py).
set -euo pipefail
REWARD_URL=${REWARD_URL:-http://127.0.0.1:8000}
POLICY=${POLICY:-Qwen/Qwen2.5-VL-3B-Instruct}
DATA=${DATA:-/data/prompts}
AGENT=$(python -c 'import mrm_ray.rl.openrlhf_agent as m; print(m.__file__)')

ray job submit --address "${RAY_ADDRESS:-http://127.0.0.1:8265}" \
  --runtime-env-json "{\"env_vars\": {\"MRM_REWARD_URL\": \"$REWARD_URL\", \"MRM_GROUP_SIZE\": \"8\",
                       \"MRM_REWARD\": \"hybrid\", \"MRM_REWARD_METHOD\": \"uwo\"}}" \
  -- python3 -m openrlhf.cli.train_ppo_ray \
  --actor.model_name_or_path "$POLICY" \
  --actor.num_nodes 1 --actor.num_gpus_per_node 8 \
  --vllm.num_engines 4 --vllm.tensor_parallel_size 2 --vllm.gpu_memory_utilization 0.6 \
  --data.prompt_dataset "$DATA" --data.input_key prompt --data.label_key answer --data.image_key images \
  --data.apply_chat_template \
  --rollout.n_samples_per_prompt 8 --rollout.max_new_tokens 1024 --rollout.batch_size 128 \
  --train.batch_size 128 --train.micro_batch_size 4 --train.max_epochs 1 --train.num_episodes 1 \
  --algo.advantage.estimator group_norm --algo.kl.use_loss --algo.kl.init_coef 0.001 \
  --ds.zero_stage 3 --actor.gradient_checkpointing_enable \
  --train.agent_func_path "$AGENT" \
  --ckpt.save_steps 50 --ckpt.path /tmp/openrlhf-ckpt --logger.logging_steps 1
