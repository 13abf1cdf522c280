#!/usr/bin/env bash
# GRPO on TherapyGym with OpenRLHF's multi-turn agent (checked against OpenRLHF 0.11.0, 3c3be623).
#
#   therapygym serve --patient openai:... --judge openai:... --out runs/openrlhf-grpo &
#   pip install ./adapters/python          # in the environment of every Ray worker
#   ray start --head
#   THERAPYGYM_URL=http://<service host>:8700 bash adapters/python/examples/openrlhf/run_openrlhf_agent.sh
#
# Paper settings: G = 4 (n_samples_per_prompt), lr 1e-6, 16 prompts per step, <= 16,384 tokens.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export THERAPYGYM_URL="${THERAPYGYM_URL:-http://127.0.0.1:8700}"
MODEL="${MODEL:-Qwen/Qwen3-4B-Instruct-2507}"
DATA="${DATA:-$HOME/data/therapygym}"
mkdir -p "$DATA"
# Rows hold only the task (label = {"profile_id", "seed"}); the agent takes the system prompt
# from the service at reset. One row per profile and epoch, each with a fresh seed.
python3 -m therapygym_adapters.datasets --engine openrlhf \
  --profiles "${PROFILES:-data/profiles/examples.jsonl}" --epochs 50 --seed 1000 --out "$DATA/openrlhf_train.jsonl"

# The agent counts OpenRLHF's token budget (--data.max_len) with the policy's tokenizer.
export THERAPYGYM_TOKENIZER="${THERAPYGYM_TOKENIZER:-$MODEL}"

ray job submit --address="${RAY_ADDRESS:-http://127.0.0.1:8265}" \
  --runtime-env-json="{\"env_vars\": {\"THERAPYGYM_URL\": \"$THERAPYGYM_URL\", \"THERAPYGYM_TOKENIZER\": \"$THERAPYGYM_TOKENIZER\"}}" \
  -- python3 -m openrlhf.cli.train_ppo_ray \
  --actor.model_name_or_path "$MODEL" \
  --train.agent_func_path "$HERE/therapy_agent.py" \
  --data.prompt_dataset "$DATA/openrlhf_train.jsonl" \
  --data.input_key prompt \
  --data.label_key label \
  --data.max_len 16384 \
  --rollout.batch_size 16 \
  --rollout.n_samples_per_prompt 4 \
  --train.batch_size 64 \
  --train.micro_batch_size 1 \
  --rollout.micro_batch_size 4 \
  --train.max_epochs 1 \
  --train.num_episodes 1 \
  --algo.advantage.estimator group_norm \
  --actor.adam.lr 1e-6 \
  --actor.eps_clip 0.2 \
  --algo.kl.use_loss \
  --algo.kl.estimator k3 \
  --algo.kl.init_coef 0.001 \
  --actor.num_nodes 1 --actor.num_gpus_per_node "${N_GPUS:-8}" \
  --ref.num_nodes 1 --ref.num_gpus_per_node "${N_GPUS:-8}" \
  --vllm.num_engines "${N_VLLM:-4}" --vllm.tensor_parallel_size 2 \
  --train.colocate_all --ds.enable_sleep --vllm.enable_sleep \
  --ds.zero_stage 3 --ds.param_dtype bf16 \
  --actor.gradient_checkpointing_enable \
  --ckpt.output_dir "${SAVE:-./exp/therapygym-openrlhf}" \
  "$@"
