#!/usr/bin/env bash
# Reward-only OpenRLHF (single-turn, no simulated patient): OpenRLHF posts each decoded
# prompt + response to the service's /get_reward (checked against OpenRLHF 0.11.0, 3c3be623).
#
#   therapygym serve --judge openai:... --chat-format chatml --out runs/openrlhf-rm &
#
# The dataset's label column is {"profile_id", "seed"} as JSON; the prompt is the conversation so
# far (e.g. a patient's opening), chat-templated by --data.apply_chat_template.
# An unscored session answers HTTP 422 by default (the service's --reward-unscored error):
# OpenRLHF 0.11 logs "Failed to fetch reward from remote RM" and the sample has no reward, which
# stops the run. `--reward-unscored neutral --reward-neutral-value X` answers X instead (logged as
# extra_logs.unscored = 1).
set -euo pipefail
THERAPYGYM_URL="${THERAPYGYM_URL:-http://127.0.0.1:8700}"
MODEL="${MODEL:-Qwen/Qwen3-4B-Instruct-2507}"
DATASET="${DATASET:?a JSONL with prompt (messages) and label ({\"profile_id\",\"seed\"}) columns}"

ray job submit --address="${RAY_ADDRESS:-http://127.0.0.1:8265}" \
  -- python3 -m openrlhf.cli.train_ppo_ray \
  --actor.model_name_or_path "$MODEL" \
  --reward.remote_url "$THERAPYGYM_URL/get_reward" \
  --data.prompt_dataset "$DATASET" \
  --data.input_key prompt \
  --data.label_key label \
  --data.apply_chat_template \
  --data.max_len 4096 \
  --rollout.max_new_tokens 1024 \
  --rollout.batch_size 16 \
  --rollout.n_samples_per_prompt 4 \
  --train.batch_size 64 \
  --algo.advantage.estimator group_norm \
  --actor.adam.lr 1e-6 \
  --actor.eps_clip 0.2 \
  --algo.kl.use_loss --algo.kl.estimator k3 --algo.kl.init_coef 0.001 \
  "$@"
