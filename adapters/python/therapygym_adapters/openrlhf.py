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
  nothing is left. ``extra_logs`` values become tensors (numbers only).
- ``openrlhf/trainer/ray/vllm_engine.py``: the ``n_samples_per_prompt`` samples of a prompt get
  **one shared** ``SamplingParams`` object, so ``sampling_params.max_tokens`` as a step sees it
  (after an ``await``) may be another sample's budget.
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
- The agent counts its own sample's tokens (prompt, every action plus its EOS, every feedback)
  against ``max_len`` (``--data.max_len``; set ``max_len=``/``THERAPYGYM_MAX_LEN``; without it
  the budget is estimated once, conservatively, from the shared ``SamplingParams`` at the
  sample's first step, before any ``await``). When the next turn would not fit it ends the
  episode itself (``POST …/abandon``, then the group's ``scored_mean``): otherwise OpenRLHF
  would stop the loop silently and train on a summed reward of 0.0 with the episode left open.
- Nothing raises into OpenRLHF for one member: a failed create or step abandons the episode and
  ends the sample with the group's value (or ``all_unscored_value`` when the group cannot say).
- The tokenizer is loaded once per process in a worker thread, and all counting runs there too,
  never on the vLLM actor's event loop.
- With ``serve --turn-reward`` each intermediate step's ``rewards`` is that turn's reward
  (OpenRLHF sums them with the final session reward).

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
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ._common import (
    UNSCORED_METRIC,
    Resolved,
    Task,
    abandon_quietly,
    check_id,
    is_solo,
    log_service_info,
    new_episode_id,
    open_episode,
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
    ``THERAPYGYM_MIN_TURN_TOKENS``, ``THERAPYGYM_TOKENIZER``, ``THERAPYGYM_MAX_LEN``.
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
    #: OpenRLHF's ``--data.max_len`` (prompt and all turns): the budget the agent counts against.
    max_len: int | None = None
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
            ("max_len", "THERAPYGYM_MAX_LEN", int),
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
        #: Tokens of this sample so far, as OpenRLHF counts them (prompt + actions + feedback).
        self.used = 0
        #: This sample's budget (``max_len``, or the estimate made at its first step).
        self.max_len: int | None = cfg.max_len
        self.failed: str | None = None

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
        observation = states["observation"]
        try:
            await run_blocking(log_service_info, self.client)
            resp = await run_blocking(open_episode, self.client, self.task, self.episode_id)
            if self.cfg.render_prompt:
                observation = self.cfg.template.render(resp["messages"], add_generation_prompt=True)
        except TherapyGymError as e:
            logger.error(
                "%s: episode %s (group %s) could not be created (%s); the sample ends at its first step",
                UNSCORED_METRIC,
                self.episode_id,
                self.task.group,
                e,
            )
            self.failed = e.kind
        self.used = await self._count(observation)
        return {"observation": observation}

    async def step(self, states: dict, **kwargs: Any) -> dict:
        if self.episode_id is None or self.task is None:
            raise RuntimeError("step before reset")
        # Before any await: the SamplingParams object is shared by the prompt's samples.
        shared_budget = _record_budget(states.get("sampling_params"))
        tpl = self.cfg.template
        action = states.get("action_text") or ""
        close = not (tpl.ends_turn(action) or self.cfg.eos_is_turn_end)
        if self.done:
            # OpenRLHF does not step after done; end again rather than raise.
            return await self._finish(None, "step_after_done", {}, tpl.final_feedback(close_assistant=close))
        if self.max_len is None and shared_budget is not None:
            # OpenRLHF sets max_tokens = max_len - (a sample's length) before each generation;
            # the first step of the prompt's samples sees only first-turn values (nobody has
            # stepped before), and the samples share the prompt: the largest value seen at any
            # step entry is max_len - (this prompt's length).
            self.max_len = shared_budget + self.used
        if self.failed is not None:
            return await self._finish(None, self.failed, {}, tpl.final_feedback(close_assistant=close))
        turn = self.turn + 1
        try:
            resp = await run_blocking(self.client.step, self.episode_id, action, turn)
        except TherapyGymError as e:
            logger.error(
                "%s: step %d of episode %s failed (%s); the sample ends here",
                UNSCORED_METRIC,
                turn,
                self.episode_id,
                e,
            )
            await self._abandon(f"step failed: {e.kind}")
            return await self._finish(None, e.kind, {}, tpl.final_feedback(close_assistant=close))
        self.turn = turn
        # The action's tokens: its text plus the EOS the text does not show.
        self.used += await self._count(action) + 1
        if not resp.get("done"):
            feedback = tpl.user_feedback(_patient_text(resp.get("observation")), close_assistant=close)
            self.used += await self._count(feedback)
            if self._out_of_budget():
                # OpenRLHF would stop the loop without telling anyone; end the episode here.
                await self._abandon("engine_budget")
                return await self._finish(
                    None, "engine_budget", {}, tpl.final_feedback(close_assistant=close)
                )
            turn_reward = resp.get("turn_reward")
            if not isinstance(turn_reward, (int, float)) or isinstance(turn_reward, bool):
                turn_reward = 0.0
            return {
                "rewards": _scalar(float(turn_reward)),
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

    async def _abandon(self, reason: str) -> None:
        assert self.episode_id is not None
        await run_blocking(abandon_quietly, self.client, self.episode_id, reason)

    async def _finish(
        self, reward: Any, reason: str | None, info: Mapping[str, Any], feedback: str
    ) -> dict:
        assert self.task is not None
        self.done = True
        if is_solo(self.task) and not isinstance(reward, (int, float)):
            resolved = Resolved(float(self.cfg.all_unscored_value), True, reason, "constant")
        else:
            try:
                resolved = await resolve_reward_async(
                    self.client,
                    self.task.group,
                    reward,
                    reason=reason or "unscored",
                    wait_s=self.cfg.group_wait_s,
                    group_size=self.task.group_size,
                    all_unscored_value=self.cfg.all_unscored_value,
                )
            except TherapyGymError as e:
                # Never fail the Ray task for one member: the documented neutral value, flagged.
                logger.error(
                    "%s: no group value for episode %s (%s): reward := all_unscored_value",
                    UNSCORED_METRIC,
                    self.episode_id,
                    e,
                )
                resolved = Resolved(float(self.cfg.all_unscored_value), True, e.kind, "constant")
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

    async def _count(self, text: str) -> int:
        if not text:
            return 0
        if self.cfg.tokenizer is None:
            return math.ceil(len(text.encode("utf-8")) / max(self.cfg.bytes_per_token, 0.5))
        return await run_blocking(_count_tokens, self.cfg.tokenizer, text)

    def _out_of_budget(self) -> bool:
        if self.max_len is None:
            return False
        left = self.max_len - self.used
        if left < self.cfg.min_turn_tokens:
            logger.warning(
                "%s: episode %s ends after turn %d: about %d tokens of OpenRLHF's max_len (%d) left "
                "(< min_turn_tokens %d); raise --data.max_len or lower limits.max_total_tokens",
                UNSCORED_METRIC,
                self.episode_id,
                self.turn,
                left,
                self.max_len,
                self.cfg.min_turn_tokens,
            )
            return True
        return False


_BUDGET_ATTR = "_therapygym_first_turn_budget"


def _record_budget(sampling_params: Any) -> int | None:
    """The largest ``max_tokens`` any step entry saw on this (shared) SamplingParams object,
    kept on the object itself (vLLM's ``SamplingParams`` takes extra attributes); just the current
    value when it does not."""
    v = getattr(sampling_params, "max_tokens", None)
    if not isinstance(v, int) or isinstance(v, bool):
        return None
    best = getattr(sampling_params, _BUDGET_ATTR, None)
    best = v if not isinstance(best, int) else max(best, v)
    try:
        setattr(sampling_params, _BUDGET_ATTR, best)
    except (AttributeError, TypeError):
        pass
    return best


_TOKENIZERS: dict[str, Any] = {}
_TOKENIZERS_LOCK = threading.Lock()
#: How many times a tokenizer was loaded (once per name and process).
TOKENIZER_LOADS: dict[str, int] = {}


def _tokenizer(spec: Any) -> Any:
    """The tokenizer object for a name (loaded once per process; call it off the event loop)."""
    if spec is None or not isinstance(spec, str):
        return spec
    with _TOKENIZERS_LOCK:
        if spec not in _TOKENIZERS:
            from transformers import AutoTokenizer  # noqa: PLC0415 - present wherever OpenRLHF runs

            _TOKENIZERS[spec] = AutoTokenizer.from_pretrained(spec, trust_remote_code=True)
            TOKENIZER_LOADS[spec] = TOKENIZER_LOADS.get(spec, 0) + 1
        return _TOKENIZERS[spec]


def _count_tokens(spec: Any, text: str) -> int:
    """Tokens of ``text`` (runs in the adapter's worker threads, never on the event loop)."""
    return len(_tokenizer(spec).encode(text, add_special_tokens=False))


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
