"""GRPO on TherapyGym with TRL's GRPOTrainer and a multi-turn rollout_func.

Checked against huggingface/trl f2cd5771 (1.10.0.dev0). Start the service first:

    therapygym serve --patient openai:... --judge openai:... --out runs/trl-grpo &
    pip install ./adapters/python "trl[vllm]"
    THERAPYGYM_URL=http://127.0.0.1:8700 accelerate launch adapters/python/examples/trl/train_trl_grpo.py

With more than one process, use vLLM server mode (`trl vllm-serve --model MODEL` on its own GPU,
then `--vllm-mode server`): the rollout then calls TRL's vLLM once per therapist turn with every
row, as TRL's collective generation requires.

Settings follow the paper (G = 4, lr 1e-6, 16 prompts per step, <= 16,384 tokens per episode)
and docs/rl-engines.md (TRL's defaults differ: num_generations 8, loss_type "dapo").
"""

from __future__ import annotations

import argparse
import logging
import os

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from therapygym_adapters.client import TherapyGymClient
from therapygym_adapters.datasets import expand_tasks, read_profile_ids, trl_rows
from therapygym_adapters.trl import make_rollout_func, reward_func


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="Qwen/Qwen3-4B-Instruct-2507")
    ap.add_argument("--profiles", default="data/profiles/examples.jsonl")
    ap.add_argument("--epochs", type=int, default=50, help="rows per profile, each with a fresh seed")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--url", default=os.environ.get("THERAPYGYM_URL", "http://127.0.0.1:8700"))
    ap.add_argument("--vllm-mode", choices=["colocate", "server"], default="colocate")
    ap.add_argument("--output-dir", default="exp/therapygym-trl")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO)

    # One row per (profile, epoch) with a fresh seed: a GRPO group (profile_id, seed) never
    # repeats, and one pass over the rows is the whole run.
    tasks = expand_tasks(read_profile_ids(a.profiles), epochs=a.epochs, base_seed=a.seed, split="train")
    train = Dataset.from_list(trl_rows(tasks))  # column "prompt": the task as JSON

    args = GRPOConfig(
        output_dir=a.output_dir,
        num_train_epochs=1,
        # The paper: 16 prompts x G = 4 rollouts per step, AdamW, lr 1e-6.
        num_generations=4,
        per_device_train_batch_size=16,
        gradient_accumulation_steps=4,
        learning_rate=1e-6,
        # Explicit loss settings (TRL's defaults are not verl's): token-mean aggregation ("dapo" is
        # TRL's token-mean), group-normalised advantages (TRL's ε is fixed at 1e-4), clip 0.2 both
        # ways, no KL term (the paper does not report one).
        loss_type="dapo",
        scale_rewards="group",
        epsilon=0.2,
        epsilon_high=0.2,
        beta=0.0,
        # All therapist turns together (the prompt is the system message; 16,384 per episode).
        max_completion_length=14336,
        temperature=1.0,
        use_vllm=True,
        vllm_mode=a.vllm_mode,
        bf16=True,
        gradient_checkpointing=True,
        logging_steps=1,
        log_completions=True,
        report_to="none",
    )
    client = TherapyGymClient(a.url)
    rollout = make_rollout_func(
        client,
        # generate: the trainer's own vLLM (default); tokenizer: the trainer's processing_class.
        limits={"max_therapist_turns": 5, "max_total_tokens": 12288},
        chat_template_kwargs={"enable_thinking": False},  # ignored by templates without it
    )
    trainer = GRPOTrainer(
        model=a.model,
        reward_funcs=[reward_func],  # None for unscored sessions: TRL masks them (advantage 0)
        args=args,
        train_dataset=train,
        rollout_func=rollout,
    )
    trainer.train()


if __name__ == "__main__":
    main()
