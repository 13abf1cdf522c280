"""verl adapter: a multi-turn interaction (the simulated patient) and a reward function.

Checked against volcengine/verl ``b178a3cd56f58b2d502255daba591e92833930a7`` (2026-01-29,
``verl/version/version`` = 0.8.0.dev):

- ``verl/interactions/base.py`` ``BaseInteraction``: ``__init__(config: dict)`` (sets
  ``self.config``, ``self.name``); ``async start_interaction(instance_id=None, **kwargs) -> str``;
  ``async generate_response(instance_id, messages, **kwargs) -> tuple[bool, str, float, dict]``;
  ``async calculate_score() -> float``; ``async finalize_interaction() -> None`` (the shipped
  ``Gsm8kInteraction`` takes ``instance_id`` in the last two; both forms work here).
- ``verl/interactions/utils/interaction_registry.py``: the YAML's ``class_name`` is imported,
  instantiated with ``config=`` (the YAML ``config`` plus ``name``).
- ``verl/experimental/agent_loop/tool_agent_loop.py`` (``tool_agent``): one loop object (hence
  one interaction object) per sample; ``request_id = uuid4().hex`` is the instance id;
  ``start_interaction(request_id, **interaction_kwargs)``; after each generated turn,
  ``generate_response(request_id, messages, **interaction_kwargs)`` with the turn decoded
  (``skip_special_tokens=True``) as the last ``assistant`` message; the returned text becomes a
  ``user`` message with response mask 0 (also on the terminating call); a returned score is
  appended to ``turn_scores`` only when it is not ``None``; ``max_assistant_turns`` and
  ``response_length`` end the loop right after a generation, *before* the interaction sees
  that turn; ``finalize_interaction`` is never called.
- Reward: ``verl/experimental/reward_loop/reward_manager/naive.py`` calls
  ``compute_score(data_source=, solution_str=, ground_truth=, extra_info=)`` (sync in a thread,
  or awaited when it is a coroutine function) with ``extra_info`` = the row's ``extra_info`` +
  the loop's extra fields (``turn_scores``) + ``num_turns``; a dict result needs ``"score"``,
  its other keys are logged. ``verl/trainer/ppo/reward.py`` loads
  ``custom_reward_function.path`` (a file, or ``pkg://module``) / ``.name`` and merges
  ``custom_reward_function.reward_kwargs`` into the call.

Differences from the engine's usual setup, on purpose (docs/rl-engines.md):

- Intermediate steps return score ``None`` (not 0.0), so ``turn_scores`` holds only the final
  reward: ``[]`` then tells :func:`compute_score` that verl stopped the episode before the
  service ended it (a 0.0 there would be indistinguishable from a real final 0.0).
- The final step returns ``NaN`` for an unscored session; :func:`compute_score` replaces it
  (and a missing final score) with the group's ``scored_mean`` (§5.0).
- The episode is deleted on the terminating step (verl never finalises; the TTL is the backstop).

Usage: see ``examples/verl/`` and docs/rl-engines.md.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from ._common import (
    UNSCORED_METRIC,
    Resolved,
    Task,
    check_id,
    client_from,
    log_service_info,
    new_episode_id,
    parse_task,
    resolve_reward,
    resolve_reward_async,
    run_blocking,
)
from .client import TherapyGymClient, TherapyGymError

try:  # the real base class when verl is installed; the adapter also works without it
    from verl.interactions.base import BaseInteraction as _BaseInteraction
except ImportError:  # pragma: no cover - depends on the environment
    _BaseInteraction = object

__all__ = [
    "VERL_REVISION",
    "TherapyInteraction",
    "compute_score",
    "compute_score_async",
]

VERL_REVISION = "volcengine/verl@b178a3cd56f58b2d502255daba591e92833930a7 (0.8.0.dev)"

logger = logging.getLogger("therapygym_adapters")


@dataclass
class _Episode:
    task: Task
    turn: int = 0
    final: dict | None = None
    closed: bool = False
    info: dict = field(default_factory=dict)


def _patient_text(observation: Any) -> str:
    if not observation:
        return ""
    parts = [m.get("content", "") for m in observation if isinstance(m, Mapping)]
    return "\n\n".join(p for p in parts if p)


def _final_score(resp: Mapping[str, Any]) -> float:
    reward = resp.get("reward")
    if resp.get("status") == "scored" and isinstance(reward, (int, float)):
        return float(reward)
    return math.nan


class TherapyInteraction(_BaseInteraction):
    """The simulated patient as a verl interaction (``BaseInteraction`` when verl is present).

    Config (the interaction YAML's ``config``): ``base_url`` (default ``$THERAPYGYM_URL`` or
    ``http://127.0.0.1:8700``), ``timeout_s``, ``max_retries``, and defaults for every episode:
    ``split``, ``limits`` (``max_therapist_turns``, ``max_total_tokens``,
    ``closing_patient_reply``), ``opening``; ``close_on_done`` (default true). Each dataset
    row's ``extra_info.interaction_kwargs`` carries ``name``, ``profile_id``, ``seed`` and may
    override ``split``, ``group_id``, ``group_size``, ``limits``, ``opening``.
    """

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        config = dict(config or {}, **kwargs)
        if _BaseInteraction is not object:
            super().__init__(config)
        else:
            self.config = config
            self.name = config.get("name", "therapy")
        self.client: TherapyGymClient = client_from(config)
        self.defaults = {k: config.get(k) for k in ("split", "limits", "opening")}
        self.close_on_done = bool(config.get("close_on_done", True))
        self._episodes: dict[str, _Episode] = {}
        self._lock = threading.Lock()

    # verl API -----------------------------------------------------------------------------

    async def start_interaction(self, instance_id: str | None = None, **kwargs: Any) -> str:
        """``POST /v1/episodes`` with ``episode_id = instance_id`` and the row's task."""
        task = self._task(kwargs)
        episode_id = check_id("instance_id", instance_id or new_episode_id("verl"))
        await run_blocking(log_service_info, self.client)
        resp = await run_blocking(
            self.client.create_episode,
            task.profile_id,
            task.seed,
            episode_id=episode_id,
            group_id=task.group,
            split=task.split,
            limits=task.limits,
            opening=task.opening,
        )
        with self._lock:
            self._episodes[episode_id] = _Episode(task=task, turn=int(resp.get("turn") or 0))
        return episode_id

    async def generate_response(
        self, instance_id: str, messages: list[dict[str, Any]], **kwargs: Any
    ) -> tuple[bool, str, float | None, dict[str, Any]]:
        """``POST /step`` with the last assistant message.

        Returns ``(done, patient_text, score, info)``: ``score`` is ``None`` before the end, the
        reward at the end, ``NaN`` when the judge could not score the session.
        """
        ep = self._episodes.get(instance_id)
        if ep is None:
            # A fresh interaction object (or a restarted worker): creation is idempotent, and the
            # turn number follows from the conversation itself.
            await self.start_interaction(instance_id, **kwargs)
            ep = self._episodes[instance_id]
            ep.turn = max(ep.turn, sum(1 for m in messages if m.get("role") == "assistant") - 1)
        if ep.final is not None:
            raise TherapyGymError(
                "episode_done",
                0,
                f"generate_response after the end of episode {instance_id}",
                episode_id=instance_id,
            )
        content = next(
            (m.get("content") or "" for m in reversed(messages) if m.get("role") == "assistant"),
            None,
        )
        if content is None:
            raise ValueError(f"episode {instance_id}: no assistant message to send to the patient")
        turn = ep.turn + 1
        resp = await run_blocking(self.client.step, instance_id, content, turn)
        ep.turn = turn
        if not resp.get("done"):
            return False, _patient_text(resp.get("observation")), None, {"turn": turn}
        ep.final = resp
        score = _final_score(resp)
        info = dict(resp.get("info") or {})
        info["status"] = resp.get("status")
        if math.isnan(score):
            logger.warning(
                "%s: episode %s (group %s) is unscored (%s); compute_score imputes the group's scored_mean",
                UNSCORED_METRIC,
                instance_id,
                ep.task.group,
                info.get("unscored_reason"),
            )
        if self.close_on_done:
            await self._close(instance_id, ep)
        return True, _patient_text(resp.get("observation")), score, info

    async def calculate_score(self, instance_id: str | None = None, **kwargs: Any) -> float:
        """The final reward (``NaN`` when unscored); 409 ``episode_not_done`` before the end."""
        if instance_id is None:
            raise ValueError("calculate_score needs the instance id")
        ep = self._episodes.get(instance_id)
        if ep is not None and ep.final is not None:
            return _final_score(ep.final)
        resp = await run_blocking(self.client.score_episode, instance_id)
        return _final_score(resp)

    async def finalize_interaction(self, instance_id: str | None = None, **kwargs: Any) -> None:
        """Deletes the episode (verl never calls this; the service's TTL covers that)."""
        ids = [instance_id] if instance_id is not None else list(self._episodes)
        for i in ids:
            ep = self._episodes.get(i)
            if ep is not None:
                await self._close(i, ep)
            with self._lock:
                self._episodes.pop(i, None)

    # helpers ------------------------------------------------------------------------------

    def _task(self, kwargs: Mapping[str, Any]) -> Task:
        merged = {k: v for k, v in self.defaults.items() if v is not None}
        merged.update({k: v for k, v in kwargs.items() if v is not None})
        return parse_task(merged, what="interaction_kwargs")

    async def _close(self, instance_id: str, ep: _Episode) -> None:
        if ep.closed:
            return
        ep.closed = True
        try:
            await run_blocking(self.client.delete_episode, instance_id)
        except TherapyGymError as e:  # the TTL removes it anyway; never fail a rollout for this
            logger.warning("therapygym: DELETE episode %s failed: %s", instance_id, e)


# ---------------------------------------------------------------------------------------------
# The reward function

_CLIENTS: dict[str | None, TherapyGymClient] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(base_url: str | None) -> TherapyGymClient:
    with _CLIENTS_LOCK:
        c = _CLIENTS.get(base_url)
        if c is None:
            c = _CLIENTS[base_url] = TherapyGymClient(base_url)
        return c


def _final_from_extra(extra_info: Mapping[str, Any] | None) -> tuple[Task, Any, str | None]:
    if not extra_info:
        raise ValueError(
            "compute_score needs extra_info (interaction_kwargs and turn_scores); run verl's "
            "tool_agent loop with the TherapyInteraction and the reward loop (reward_model.use_reward_loop=True)"
        )
    ik = extra_info.get("interaction_kwargs")
    if ik is None:
        raise ValueError("extra_info.interaction_kwargs is missing: it must hold profile_id and seed")
    task = parse_task(ik, what="extra_info.interaction_kwargs")
    turn_scores = extra_info.get("turn_scores")
    if turn_scores is None:
        raise ValueError(
            "extra_info.turn_scores is missing: verl passes the interaction's scores to the reward "
            "function only through the reward loop (reward_model.use_reward_loop=True, the default)"
        )
    finals = [s for s in list(turn_scores) if s is not None]
    if not finals:
        return task, None, "not_finished"
    final = finals[-1]
    if isinstance(final, (int, float)) and not isinstance(final, bool) and math.isfinite(final):
        return task, float(final), None
    return task, None, "unscored"


def _result(resolved: Resolved) -> dict[str, float]:
    # Every sample returns the same keys: verl stacks them into reward_extra_info.
    return {"score": resolved.value, UNSCORED_METRIC: resolved.metric}


def compute_score(
    data_source: Any = None,
    solution_str: str | None = None,
    ground_truth: Any = None,
    extra_info: Mapping[str, Any] | None = None,
    *,
    base_url: str | None = None,
    group_wait_s: float = 600.0,
    group_size: int | None = None,
    all_unscored_value: float = 0.0,
    **kwargs: Any,
) -> dict[str, float]:
    """verl custom reward function: the session reward from the interaction's final score.

    A scored session gives its reward. An unscored one (``NaN``), or one verl stopped before the
    service ended it (``turn_scores`` empty: ``response_length`` or ``max_assistant_turns``
    reached first), gets its group's ``scored_mean`` after ``GET /v1/groups/{group_id}``
    (``group_wait_s``; raises ``group_incomplete`` when the group does not finish in time), or
    ``all_unscored_value`` when no member was scored. Returns ``{"score", "therapygym/unscored"}``.
    ``base_url``, ``group_wait_s``, ``group_size`` and ``all_unscored_value`` come from
    ``custom_reward_function.reward_kwargs``; ``group_size`` defaults to the row's
    ``interaction_kwargs.group_size``, then to the service's ``--group-size``.
    """
    task, reward, reason = _final_from_extra(extra_info)
    resolved = resolve_reward(
        _client(base_url),
        task.group,
        reward,
        reason=reason,
        wait_s=group_wait_s,
        group_size=task.group_size or group_size,
        all_unscored_value=all_unscored_value,
    )
    return _result(resolved)


async def compute_score_async(
    data_source: Any = None,
    solution_str: str | None = None,
    ground_truth: Any = None,
    extra_info: Mapping[str, Any] | None = None,
    *,
    base_url: str | None = None,
    group_wait_s: float = 600.0,
    group_size: int | None = None,
    all_unscored_value: float = 0.0,
    poll_s: float = 2.0,
    **kwargs: Any,
) -> dict[str, float]:
    """:func:`compute_score` as a coroutine (verl's reward loop awaits it; waiting for a group
    then polls instead of holding a thread)."""
    task, reward, reason = _final_from_extra(extra_info)
    resolved = await resolve_reward_async(
        _client(base_url),
        task.group,
        reward,
        reason=reason,
        wait_s=group_wait_s,
        group_size=task.group_size or group_size,
        all_unscored_value=all_unscored_value,
        poll_s=poll_s,
    )
    return _result(resolved)
