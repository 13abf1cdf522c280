"""OpenRLHF adapter: a multi-turn agent (``--train.agent_func_path``) whose environment is the
simulated patient, and the remote-reward route (``--reward.remote_url``).

Checked against OpenRLHF/OpenRLHF ``3c3be6234e0cb353e76bb8019947db9dfe99fca7`` (2026-08-13,
``version.txt`` = 0.11.0):

- ``openrlhf/utils/agent.py``: ``AgentInstanceBase`` (abstract ``__init__(*args, **kwargs)``,
  ``async reset(states: dict, **kwargs)`` returning a dict with ``observation``, abstract
  ``async step(state_dict: dict, **kwargs)``); ``MultiTurnAgentExecutor(AgentExecutorBase)``:
  ``__init__(agent_instance_cls)`` (asserts a subclass of ``AgentInstanceBase``) and
  ``async execute(prompt, label, sampling_params, max_length, hf_tokenizer, llm_engine,
  images=None)``, which builds one instance per sample with no arguments, calls
  ``reset({"observation": prompt, "label": label})``, then per generated turn
  ``step({"observation_text", "action_text", "label", "sampling_params"})`` and uses
  ``rewards.item()`` (summed over steps), ``scores`` (last step), ``environment_feedback``
  (tokenized with ``add_special_tokens=False`` and appended with action mask 0), ``done``,
  ``extra_logs`` (last step) and an optional ``sampling_params``. Before each turn it sets
  ``sampling_params.max_tokens`` to what is left of ``max_length`` and stops silently when
  nothing is left.
- ``openrlhf/trainer/ray/vllm_engine.py`` loads ``AgentExecutor`` from the agent file and asserts
  ``issubclass(AgentExecutor, AgentExecutorBase)``; it is instantiated with no arguments.
  ``generate_responses`` runs the ``n_samples_per_prompt`` samples of a prompt concurrently
  (``asyncio.gather``), so an unscored member can wait for the rest of its group.
- Remote reward: ``SingleTurnAgentExecutor`` posts ``{"query", "prompts", "labels"}`` (one sample,
  ``query`` = prompt + response decoded with special tokens) to ``--reward.remote_url`` with a
  180 s timeout, 5 tries, and reads ``rewards``, ``scores``, ``extra_logs``. It *catches* a
  failed request and leaves the sample's reward empty (only an info-level log line).

Differences from the engine's usual setup, on purpose (docs/rl-engines.md):

- The patient text is wrapped in the policy's markup, but the end marker of the therapist turn is
  added only when the generated tokens lack it. vLLM returns the EOS token among the generated
  token ids, and for ChatML instruct models the EOS *is* ``<|im_end|>``; the spec's example
  (``"<|im_end|>\\n<|im_start|>user\\n"…``) would then put two end markers in the sequence.
  ``eos_is_turn_end=False`` restores the spec's form for policies whose EOS differs.
- When the estimated token budget left after a turn cannot hold another turn, the agent ends the
  episode itself (DELETE, then the group's ``scored_mean``): otherwise OpenRLHF would stop the
  loop silently and train on a summed reward of 0.0.

Usage: ``--train.agent_func_path`` pointing at a file with
``from therapygym_adapters.openrlhf import AgentExecutor`` (configured by ``THERAPYGYM_*``
environment variables) or ``AgentExecutor = make_agent_executor(base_url=…, template=…)``;
see ``examples/openrlhf/`` and docs/rl-engines.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ._common import (
    UNSCORED_METRIC,
    Resolved,
    Task,
    check_id,
    log_service_info,
    new_episode_id,
    parse_task,
    resolve_reward_async,
    run_blocking,
)
from .client import TherapyGymClient, TherapyGymError
from .templates import ChatTemplate, get_template

try:  # the real base classes when OpenRLHF is installed; standalone stand-ins otherwise
    from openrlhf.utils.agent import AgentInstanceBase as _AgentInstanceBase
    from openrlhf.utils.agent import MultiTurnAgentExecutor as _MultiTurnAgentExecutor
except ImportError:  # pragma: no cover - depends on the environment

    class _AgentInstanceBase:  # type: ignore[no-redef]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        async def reset(self, states: dict, **kwargs: Any) -> dict:
            return states

    class _MultiTurnAgentExecutor:  # type: ignore[no-redef]
        """Stand-in without OpenRLHF: holds the instance class; ``execute`` needs OpenRLHF."""

        def __init__(self, agent_instance_cls: type) -> None:
            self.agent_instance_cls = agent_instance_cls

        async def execute(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("AgentExecutor.execute runs inside OpenRLHF (pip install openrlhf)")


__all__ = [
    "OPENRLHF_REVISION",
    "AgentConfig",
    "TherapyAgentInstance",
    "AgentInstance",
    "AgentExecutor",
    "make_agent_executor",
    "reward_query",
    "get_reward",
]

OPENRLHF_REVISION = "OpenRLHF/OpenRLHF@3c3be6234e0cb353e76bb8019947db9dfe99fca7 (0.11.0)"

logger = logging.getLogger("therapygym_adapters")


@dataclass(frozen=True)
class AgentConfig:
    """How the agent talks to the service and marks up the patient's turns.

    Every field can come from the environment (read when the executor is built):
    ``THERAPYGYM_URL``, ``THERAPYGYM_CHAT_TEMPLATE`` (``chatml``/``llama3``),
    ``THERAPYGYM_SPLIT``, ``THERAPYGYM_MAX_THERAPIST_TURNS``, ``THERAPYGYM_MAX_TOTAL_TOKENS``,
    ``THERAPYGYM_OPENING``, ``THERAPYGYM_GROUP_SIZE``, ``THERAPYGYM_GROUP_WAIT_S``,
    ``THERAPYGYM_EOS_IS_TURN_END`` (1/0), ``THERAPYGYM_RENDER_PROMPT`` (1/0),
    ``THERAPYGYM_MIN_TURN_TOKENS``, ``THERAPYGYM_TOKENIZER``.
    """

    base_url: str | None = None
    template: ChatTemplate = field(default_factory=lambda: get_template("chatml"))
    #: Replace the dataset prompt by the service's opening messages (system prompt, and the
    #: patient's opening with ``opening=patient``) rendered in ``template``.
    render_prompt: bool = True
    #: The policy's EOS token is the template's end-of-turn marker (true for ChatML instruct
    #: models and Llama 3); the generated tokens then already close the therapist turn.
    eos_is_turn_end: bool = True
    split: str | None = None
    limits: Mapping[str, Any] | None = None
    opening: str | None = None
    group_size: int | None = None
    group_wait_s: float = 600.0
    all_unscored_value: float = 0.0
    #: End the episode when the estimated budget left after a turn is below this many tokens.
    min_turn_tokens: int = 64
    #: The policy's tokenizer, for counting that budget exactly: an object with
    #: ``encode(text, add_special_tokens=False)``, or a name/path for transformers'
    #: ``AutoTokenizer`` (set it to ``--actor.model_name_or_path``). Without it the count is
    #: estimated from ``bytes_per_token``.
    tokenizer: Any = None
    #: Conservative UTF-8 bytes per token for that estimate (real tokenizers average 3.5-4.5
    #: on English; a smaller value ends episodes earlier rather than letting OpenRLHF stop them).
    bytes_per_token: float = 3.0
    timeout_s: float = 900.0
    max_retries: int = 5

    @classmethod
    def from_env(cls, **overrides: Any) -> "AgentConfig":
        env = os.environ
        kw: dict[str, Any] = {}
        if env.get("THERAPYGYM_URL"):
            kw["base_url"] = env["THERAPYGYM_URL"]
        if env.get("THERAPYGYM_CHAT_TEMPLATE"):
            kw["template"] = get_template(env["THERAPYGYM_CHAT_TEMPLATE"])
        if env.get("THERAPYGYM_SPLIT"):
            kw["split"] = env["THERAPYGYM_SPLIT"]
        if env.get("THERAPYGYM_OPENING"):
            kw["opening"] = env["THERAPYGYM_OPENING"]
        if env.get("THERAPYGYM_TOKENIZER"):
            kw["tokenizer"] = env["THERAPYGYM_TOKENIZER"]
        limits = {}
        if env.get("THERAPYGYM_MAX_THERAPIST_TURNS"):
            limits["max_therapist_turns"] = int(env["THERAPYGYM_MAX_THERAPIST_TURNS"])
        if env.get("THERAPYGYM_MAX_TOTAL_TOKENS"):
            limits["max_total_tokens"] = int(env["THERAPYGYM_MAX_TOTAL_TOKENS"])
        if limits:
            kw["limits"] = limits
        for name, key, conv in (
            ("group_size", "THERAPYGYM_GROUP_SIZE", int),
            ("group_wait_s", "THERAPYGYM_GROUP_WAIT_S", float),
            ("min_turn_tokens", "THERAPYGYM_MIN_TURN_TOKENS", int),
        ):
            if env.get(key):
                kw[name] = conv(env[key])
        for name, key in (
            ("eos_is_turn_end", "THERAPYGYM_EOS_IS_TURN_END"),
            ("render_prompt", "THERAPYGYM_RENDER_PROMPT"),
        ):
            if env.get(key):
                kw[name] = env[key].strip().lower() not in ("0", "false", "no", "off")
        kw.update(overrides)
        if "template" in kw:
            kw["template"] = get_template(kw["template"])
        return cls(**kw)


def _scalar(x: float) -> Any:
    """OpenRLHF calls ``.item()`` on ``rewards``: a 0-d tensor when torch is there, else a float
    that has ``.item()``."""
    try:
        import torch  # noqa: PLC0415 - optional, present wherever OpenRLHF runs

        return torch.tensor(float(x))
    except ImportError:
        return _Float(x)


class _Float(float):
    def item(self) -> float:
        return float(self)


def _patient_text(observation: Any) -> str:
    parts = [m.get("content", "") for m in (observation or []) if isinstance(m, Mapping)]
    return "\n\n".join(p for p in parts if p)


class TherapyAgentInstance(_AgentInstanceBase):
    """One simulated session (``AgentInstanceBase`` when OpenRLHF is present).

    ``reset`` creates the episode from the sample's label (JSON with ``profile_id`` and
    ``seed``; optional ``split``, ``group_id``, ``group_size``, ``limits``, ``opening``);
    ``step`` posts the therapist turn and returns the patient's reply wrapped in the chat
    markup, or, at the end, the session reward (``rewards``), the CTRS score in [0, 1]
    (``scores``) and ``extra_logs`` with ``therapygym/unscored``, ``therapygym/ctrs`` and
    ``therapygym/safety_any``. An unscored session gets its group's ``scored_mean``.
    """

    config: AgentConfig = AgentConfig()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cfg = kwargs.pop("config", None) or type(self).config
        self.cfg: AgentConfig = cfg
        self.client = TherapyGymClient(
            cfg.base_url, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries
        )
        self.episode_id: str | None = None
        self.task: Task | None = None
        self.turn = 0
        self.done = False

    async def reset(self, states: dict, **kwargs: Any) -> dict:
        label = states.get("label")
        merged: dict[str, Any] = {
            k: v
            for k, v in (
                ("split", self.cfg.split),
                ("limits", self.cfg.limits),
                ("opening", self.cfg.opening),
                ("group_size", self.cfg.group_size),
            )
            if v is not None
        }
        merged.update(
            {k: v for k, v in parse_task(label, what="label").__dict__.items() if v is not None}
        )
        self.task = parse_task(merged, what="label")
        self.episode_id = check_id("episode id", new_episode_id("openrlhf"))
        await run_blocking(log_service_info, self.client)
        resp = await run_blocking(
            self.client.create_episode,
            self.task.profile_id,
            self.task.seed,
            episode_id=self.episode_id,
            group_id=self.task.group,
            split=self.task.split,
            limits=self.task.limits,
            opening=self.task.opening,
        )
        if self.cfg.render_prompt:
            observation = self.cfg.template.render(resp["messages"], add_generation_prompt=True)
        else:
            observation = states["observation"]
        return {"observation": observation}

    async def step(self, states: dict, **kwargs: Any) -> dict:
        if self.episode_id is None or self.task is None:
            raise RuntimeError("step before reset")
        if self.done:
            raise TherapyGymError(
                "episode_done", 0, "step after the end", episode_id=self.episode_id
            )
        action = states.get("action_text") or ""
        tpl = self.cfg.template
        close = not (tpl.ends_turn(action) or self.cfg.eos_is_turn_end)
        turn = self.turn + 1
        resp = await run_blocking(self.client.step, self.episode_id, action, turn)
        self.turn = turn
        if not resp.get("done"):
            feedback = tpl.user_feedback(_patient_text(resp.get("observation")), close_assistant=close)
            if self._out_of_budget(states.get("sampling_params"), action, feedback):
                # OpenRLHF would stop the loop without telling anyone; end the episode here.
                await run_blocking(self.client.delete_episode, self.episode_id)
                return await self._finish(
                    None, "engine_budget", {}, tpl.final_feedback(close_assistant=close)
                )
            return {
                "rewards": _scalar(0.0),
                "scores": _scalar(0.0),
                "environment_feedback": feedback,
                "done": False,
                "sampling_params": states.get("sampling_params"),
                "extra_logs": {},
            }
        info = resp.get("info") or {}
        reward = resp.get("reward") if resp.get("status") == "scored" else None
        out = await self._finish(
            reward, info.get("unscored_reason"), info, tpl.final_feedback(close_assistant=close)
        )
        try:
            await run_blocking(self.client.delete_episode, self.episode_id)
        except TherapyGymError as e:
            logger.warning("therapygym: DELETE episode %s failed: %s", self.episode_id, e)
        return out

    async def _finish(
        self, reward: Any, reason: str | None, info: Mapping[str, Any], feedback: str
    ) -> dict:
        assert self.task is not None
        self.done = True
        resolved: Resolved = await resolve_reward_async(
            self.client,
            self.task.group,
            reward,
            reason=reason or "unscored",
            wait_s=self.cfg.group_wait_s,
            group_size=self.task.group_size,
            all_unscored_value=self.cfg.all_unscored_value,
        )
        ctrs = (info.get("ctrs") or {}).get("normalized")
        safety_any = (info.get("safety") or {}).get("any")
        if resolved.unscored or not isinstance(ctrs, (int, float)):
            score = resolved.value
            ctrs = resolved.value
        else:
            score = float(ctrs)
        return {
            "rewards": _scalar(resolved.value),
            "scores": _scalar(score),
            "environment_feedback": feedback,
            "done": True,
            "extra_logs": {
                UNSCORED_METRIC: resolved.metric,
                "therapygym/ctrs": float(ctrs),
                "therapygym/safety_any": 1.0 if safety_any else 0.0,
            },
        }

    def _count(self, text: str) -> int:
        tok = _tokenizer(self.cfg.tokenizer)
        if tok is None:
            return math.ceil(len(text.encode("utf-8")) / max(self.cfg.bytes_per_token, 0.5))
        ids = tok.encode(text, add_special_tokens=False)
        return len(ids)

    def _out_of_budget(self, sampling_params: Any, action: str, feedback: str) -> bool:
        budget = getattr(sampling_params, "max_tokens", None)
        if not isinstance(budget, int) or isinstance(budget, bool):
            return False
        # The action's tokens: its text plus the EOS the text does not show.
        left = budget - (self._count(action) + 1) - self._count(feedback)
        if left < self.cfg.min_turn_tokens:
            logger.warning(
                "%s: episode %s ends after turn %d: about %d tokens of OpenRLHF's max_len left "
                "(< min_turn_tokens %d); raise --data.max_len or lower limits.max_total_tokens",
                UNSCORED_METRIC,
                self.episode_id,
                self.turn,
                left,
                self.cfg.min_turn_tokens,
            )
            return True
        return False


_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(spec: Any) -> Any:
    if spec is None or not isinstance(spec, str):
        return spec
    if spec not in _TOKENIZERS:
        from transformers import AutoTokenizer  # noqa: PLC0415 - present wherever OpenRLHF runs

        _TOKENIZERS[spec] = AutoTokenizer.from_pretrained(spec, trust_remote_code=True)
    return _TOKENIZERS[spec]


def make_agent_executor(config: AgentConfig | None = None, **overrides: Any) -> type:
    """An ``AgentExecutor`` class (``MultiTurnAgentExecutor``) bound to a config.

    ``overrides`` are :class:`AgentConfig` fields (``template`` may be a name); unset fields come
    from the ``THERAPYGYM_*`` environment variables, then the defaults.
    """
    cfg = replace(config, **overrides) if config is not None else AgentConfig.from_env(**overrides)
    if isinstance(cfg.template, str):
        cfg = replace(cfg, template=get_template(cfg.template))
    instance_cls = type("AgentInstance", (TherapyAgentInstance,), {"config": cfg})

    class AgentExecutor(_MultiTurnAgentExecutor):
        agent_config = cfg

        def __init__(self) -> None:
            super().__init__(instance_cls)

    AgentExecutor.AgentInstance = instance_cls  # type: ignore[attr-defined]
    return AgentExecutor


#: Configured from the environment when this module is imported; an agent file may simply do
#: ``from therapygym_adapters.openrlhf import AgentExecutor``.
AgentExecutor = make_agent_executor()
AgentInstance = AgentExecutor.AgentInstance  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Remote reward (--reward.remote_url http://HOST:8700/get_reward)


def reward_query(
    messages: list[Mapping[str, str]], template: "str | ChatTemplate | None" = None
) -> str:
    """The ``query`` text OpenRLHF would send for a conversation (prompt + response decoded with
    special tokens): the service parses it back into turns (``--chat-format``)."""
    return get_template(template).render(messages)


def label_for(profile_id: str, seed: int) -> str:
    """A dataset label for ``--data.label_key``: ``{"profile_id": …, "seed": …}`` as JSON."""
    return json.dumps({"profile_id": profile_id, "seed": int(seed)}, separators=(",", ":"))


def get_reward(
    client: TherapyGymClient,
    queries: list[str],
    labels: list[Any],
    prompts: list[str] | None = None,
) -> dict:
    """``POST /get_reward`` as OpenRLHF does (for offline checks; OpenRLHF posts by itself)."""
    labels = [lab if isinstance(lab, str) else json.dumps(lab) for lab in labels]
    return client.get_reward(queries, prompts if prompts is not None else [""] * len(queries), labels)
