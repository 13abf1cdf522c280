#!/usr/bin/env bash
# GRPO on TherapyGym with verl (checked against volcengine/verl b178a3cd, 0.8.0.dev).
#
#   therapygym serve --patient openai:... --judge openai:... --out runs/verl-grpo &   # prints its URL
#   pip install ./adapters/python            # on every node that runs rollouts or rewards
#   THERAPYGYM_URL=http://127.0.0.1:8700 bash adapters/python/examples/verl/run_verl_grpo.sh
#
# Settings follow the paper (G = 4, lr 1e-6, 16 prompts per step, <= 16,384 tokens per episode)
# and docs/rl-engines.md. Extra Hydra overrides can be appended as arguments.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export THERAPYGYM_URL="${THERAPYGYM_URL:-http://127.0.0.1:8700}"
MODEL="${MODEL:-Qwen/Qwen3-4B-Instruct-2507}"
DATA="${DATA:-$HOME/data/therapygym}"
PROFILES="${PROFILES:-data/profiles/examples.jsonl}"
mkdir -p "$DATA"

# One row per profile and epoch, each with a fresh seed (a GRPO group is (profile_id, seed)).
# verl rows carry the service's opening messages, so build them against this service.
python3 -m therapygym_adapters.datasets --engine verl --profiles "$PROFILES" \
  --epochs 50 --seed 1000 --url "$THERAPYGYM_URL" --out "$DATA/train.json"
# Validation: held-out profiles, one rollout each (group of 1).
python3 -m therapygym_adapters.datasets --engine verl --profiles "${HOLDOUT:-data/profiles/holdout.jsonl}" \
  --split val --group-size 1 --seed 900000 --url "$THERAPYGYM_URL" --out "$DATA/val.json"

python3 -m verl.trainer.main_ppo \
  algorithm.adv_estimator=grpo \
  algorithm.norm_adv_by_std_in_grpo=True \
  algorithm.use_kl_in_reward=False \
  data.train_files="$DATA/train.json" \
  data.val_files="$DATA/val.json" \
  data.return_raw_chat=True \
  data.train_batch_size=16 \
  data.max_prompt_length=2048 \
  data.max_response_length=14336 \
  data.filter_overlong_prompts=True \
  actor_rollout_ref.model.path="$MODEL" \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  actor_rollout_ref.actor.ppo_mini_batch_size=16 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1 \
  actor_rollout_ref.actor.loss_agg_mode=token-mean \
  actor_rollout_ref.actor.clip_ratio_low=0.2 \
  actor_rollout_ref.actor.clip_ratio_high=0.2 \
  actor_rollout_ref.actor.use_kl_loss=False \
  actor_rollout_ref.actor.entropy_coeff=0 \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.n=4 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1 \
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1 \
  actor_rollout_ref.rollout.multi_turn.enable=True \
  actor_rollout_ref.rollout.multi_turn.max_assistant_turns=6 \
  actor_rollout_ref.rollout.multi_turn.max_user_turns=6 \
  actor_rollout_ref.rollout.multi_turn.interaction_config_path="$HERE/therapy_interaction.yaml" \
  actor_rollout_ref.rollout.agent.default_agent_loop=tool_agent \
  reward_model.use_reward_loop=True \
  custom_reward_function.path=pkg://therapygym_adapters.verl \
  custom_reward_function.name=compute_score_async \
  +custom_reward_function.reward_kwargs.base_url="$THERAPYGYM_URL" \
  +custom_reward_function.reward_kwargs.group_wait_s=600 \
  trainer.total_epochs=1 \
  trainer.n_gpus_per_node="${N_GPUS:-8}" \
  trainer.nnodes=1 \
  trainer.logger='["console"]' \
  trainer.project_name=therapygym \
  trainer.experiment_name=verl-grpo \
  "$@"
