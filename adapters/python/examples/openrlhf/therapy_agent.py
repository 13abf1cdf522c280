"""OpenRLHF agent file for TherapyGym: pass it as `--train.agent_func_path therapy_agent.py`.

OpenRLHF (checked: 0.11.0, 3c3be623) loads this file inside each vLLM rollout actor and builds
`AgentExecutor()`. The patient and judge live in `therapygym serve`; this file only says where
it is and which chat markup the policy uses (environment variables override nothing here:
values passed to make_agent_executor win, unset ones come from THERAPYGYM_* variables).
"""

import os

from therapygym_adapters.openrlhf import make_agent_executor

AgentExecutor = make_agent_executor(
    base_url=os.environ.get("THERAPYGYM_URL", "http://127.0.0.1:8700"),
    # The policy's chat markup for the patient's turns: "chatml" (Qwen) or "llama3".
    template=os.environ.get("THERAPYGYM_CHAT_TEMPLATE", "chatml"),
    # Count OpenRLHF's token budget with the policy's own tokenizer.
    tokenizer=os.environ.get("THERAPYGYM_TOKENIZER") or None,
    limits={"max_therapist_turns": 5, "max_total_tokens": 12288},
)
