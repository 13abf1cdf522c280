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

- ``verl/experimental/agent_loop/agent_loop.py``: the samples of a batch run concurrently
  (``asyncio.gather``: one exception fails the whole step); with the reward loop each sample's
  reward is computed as soon as its own loop ends, while its group mates may still play; the
  reward function sees no request id, only the row, ``turn_scores``, ``num_turns`` (user +
  assistant turns + 1) and the decoded response (``solution_str``).

Differences from the engine's usual setup, on purpose (docs/rl-engines.md):

- Intermediate steps return score ``None`` (not 0.0), or the per-turn reward when the service
  runs with ``--turn-reward``; the final step returns the session reward, ``NaN`` when unscored.
- **Cut short.** When verl ends a sample itself (``response_length`` or
  ``max_assistant_turns`` right after a generation) it never calls the interaction again, so
  the service's episode would stay open and its group could not complete. :func:`compute_score`
  detects it (an even ``num_turns``: the last generation got no interaction call) and abandons
  that episode (``POST /v1/groups/{id}/abandon`` with the member's turn count and decoded
  response, which picks it out among its group mates); the sample then gets the group's
  ``scored_mean``.
- Validation/test rows (``split`` val/test) and groups of one play in a group of their own per
  episode, and their unscored members get ``all_unscored_value`` without any group lookup.
- Nothing raises into verl for one member: a failed create or step ends that member (NaN,
  abandoned), and :func:`compute_score` answers ``all_unscored_value`` when the service cannot
  say more (``therapygym/unscored`` = 1). Only configuration errors raise.
- The episode is deleted on the terminating step (verl never finalises; the TTL is the backstop).

Usage: see ``examples/verl/`` and docs/rl-engines.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from ._common import (
    UNSCORED_METRIC,
    Resolved,
    Task,
    abandon_quietly,
    check_id,
    client_from,
    is_solo,
    log_service_info,
    new_episode_id,
    open_episode,
    parse_task,
    resolve_reward_async,
    run_blocking,
    solo_group,
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
    group: str
    turn: int = 0
    final: dict | None = None
    closed: bool = False
    failed: str | None = None  # why the service cannot carry this episode (create failed)
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


def _turn_score(resp: Mapping[str, Any]) -> float | None:
    """The per-turn reward of an intermediate step (``--turn-reward``), else None."""
    r = resp.get("turn_reward")
    if isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r):
        return float(r)
    return None


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
        """``POST /v1/episodes`` with ``episode_id = instance_id`` and the row's task.

        A service failure (after the client's retries) does not raise: the member is ended at
        its first turn and masked like an unscored one."""
        task = self._task(kwargs)
        episode_id = check_id("instance_id", instance_id or new_episode_id("verl"))
        group = solo_group(task, episode_id) if is_solo(task) else task.group
        ep = _Episode(task=task, group=group)
        try:
            await run_blocking(log_service_info, self.client)
            resp = await run_blocking(open_episode, self.client, task, episode_id, group)
            ep.turn = int(resp.get("turn") or 0)
        except TherapyGymError as e:
            logger.error(
                "%s: episode %s (group %s) could not be created (%s); the member ends at its first turn, masked",
                UNSCORED_METRIC,
                episode_id,
                group,
                e,
            )
            ep.failed = e.kind
        with self._lock:
            self._episodes[episode_id] = ep
        return episode_id

    async def generate_response(
        self, instance_id: str, messages: list[dict[str, Any]], **kwargs: Any
    ) -> tuple[bool, str, float | None, dict[str, Any]]:
        """``POST /step`` with the last assistant message.

        Returns ``(done, patient_text, score, info)``: ``score`` is ``None`` before the end (or
        the per-turn reward with ``--turn-reward``), the reward at the end, ``NaN`` when the judge
        could not score the session or the service failed for this member.
        """
        ep = self._episodes.get(instance_id)
        if ep is None:
            # A fresh interaction object (or a restarted worker): creation is idempotent, and the
            # turn number follows from the conversation itself.
            await self.start_interaction(instance_id, **kwargs)
            ep = self._episodes[instance_id]
            ep.turn = max(ep.turn, sum(1 for m in messages if m.get("role") == "assistant") - 1)
        if ep.final is not None:
            # verl does not call again after done; answer the same end instead of raising.
            return True, "", _final_score(ep.final), dict(ep.final.get("info") or {})
        if ep.failed is not None:
            return self._masked(instance_id, ep, ep.failed)
        content = next(
            (m.get("content") or "" for m in reversed(messages) if m.get("role") == "assistant"),
            None,
        )
        if content is None:
            raise ValueError(f"episode {instance_id}: no assistant message to send to the patient")
        turn = ep.turn + 1
        try:
            resp = await run_blocking(self.client.step, instance_id, content, turn)
        except TherapyGymError as e:
            logger.error(
                "%s: step %d of episode %s (group %s) failed (%s); the member ends here, masked",
                UNSCORED_METRIC,
                turn,
                instance_id,
                ep.group,
                e,
            )
            if e.kind not in ("episode_abandoned", "episode_expired", "episode_not_found"):
                await run_blocking(abandon_quietly, self.client, instance_id, f"step failed: {e.kind}")
            return self._masked(instance_id, ep, e.kind)
        ep.turn = turn
        if not resp.get("done"):
            return False, _patient_text(resp.get("observation")), _turn_score(resp), {"turn": turn}
        ep.final = resp
        score = _final_score(resp)
        info = dict(resp.get("info") or {})
        info["status"] = resp.get("status")
        if math.isnan(score):
            logger.warning(
                "%s: episode %s (group %s) is unscored (%s); compute_score imputes the group's scored_mean",
                UNSCORED_METRIC,
                instance_id,
                ep.group,
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

    def _masked(self, instance_id: str, ep: _Episode, reason: str) -> tuple[bool, str, float, dict]:
        ep.final = {"status": "unscored", "reward": None, "info": {"unscored_reason": reason}}
        return True, "", math.nan, {"status": "unscored", "unscored_reason": reason}

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


@dataclass(frozen=True)
class _Sample:
    task: Task
    reward: float | None
    reason: str | None
    #: verl ended the sample right after a generation the interaction never saw.
    cut_short: bool
    #: therapist turns the service saw (when cut short)
    service_turns: int | None


def _as_int(x: Any) -> int | None:
    try:
        if hasattr(x, "tolist"):
            x = x.tolist()
        if isinstance(x, (list, tuple)):
            x = x[0] if x else None
        return None if x is None or isinstance(x, bool) else int(x)
    except (TypeError, ValueError):
        return None


def _sample(extra_info: Mapping[str, Any] | None) -> _Sample:
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
    scores = [s for s in list(turn_scores) if s is not None]
    num_turns = _as_int(extra_info.get("num_turns"))
    if num_turns is not None:
        # num_turns = user + assistant turns + 1: odd when every generation got its interaction
        # call (the last of which ended the episode), even when verl stopped after a generation.
        cut = num_turns % 2 == 0
        service_turns = (num_turns - 2) // 2 if cut else None
    else:
        cut, service_turns = not scores, None
    if cut or not scores:
        return _Sample(task, None, "engine_cut_short", True, service_turns)
    final = scores[-1]
    if isinstance(final, (int, float)) and not isinstance(final, bool) and math.isfinite(final):
        return _Sample(task, float(final), None, False, None)
    return _Sample(task, None, "unscored", False, None)


def _result(resolved: Resolved, cut_short: bool) -> dict[str, float]:
    # Every sample returns the same keys: verl stacks them into reward_extra_info.
    return {
        "score": resolved.value,
        UNSCORED_METRIC: resolved.metric,
        "therapygym/cut_short": 1.0 if cut_short else 0.0,
    }


async def _abandon_cut_short(
    client: TherapyGymClient, s: _Sample, response: str | None, deadline: float, poll_s: float
) -> str | None:
    """Abandons the episode verl cut short; returns its group id (None when none was found)."""
    solo = is_solo(s.task)
    tries = [{"response": response}] if response else []
    tries.append({})  # the turn count alone, when the decoded text cannot be matched
    kw: dict[str, Any] = {
        "turns": s.service_turns,
        "at_most": 1,
        "reason": "engine_cut_short",
    }
    if solo:
        kw["scope"] = "task"
        kw["task"] = {"profile_id": s.task.profile_id, "seed": s.task.seed}
    while True:
        ambiguous = False
        for extra in tries:
            try:
                r = await run_blocking(client.abandon_in_group, s.task.group, **kw, **extra)
            except TherapyGymError as e:
                if e.kind == "group_not_found":
                    return None
                raise
            if r.get("abandoned"):
                return str(r["abandoned"][0].get("group_id") or s.task.group)
            if r.get("ambiguous"):
                ambiguous = True
                break
        # Nothing matched: the episode already ended (TTL, an error path), or its group mates
        # with the same turn count are still playing (ambiguous): ask again shortly.
        if not ambiguous or time.monotonic() >= deadline:
            return None
        await asyncio.sleep(poll_s)


async def _score(
    s: _Sample,
    solution_str: str | None,
    *,
    base_url: str | None,
    group_wait_s: float,
    group_size: int | None,
    all_unscored_value: float,
    poll_s: float,
) -> dict[str, float]:
    if s.reward is not None:
        return _result(Resolved(s.reward, False), False)
    client = _client(base_url)
    deadline = time.monotonic() + group_wait_s
    group = s.task.group
    try:
        if s.cut_short:
            found = await _abandon_cut_short(client, s, solution_str, deadline, poll_s)
            if found is None:
                logger.warning(
                    "%s: verl cut a member of group %s short after %s service turns, but no open "
                    "episode matched it (already ended?)",
                    UNSCORED_METRIC,
                    group,
                    s.service_turns,
                )
            group = found or group
        if is_solo(s.task):
            # Validation/test or a group of one: nothing to impute from.
            return _result(Resolved(float(all_unscored_value), True, s.reason, "constant"), s.cut_short)
        resolved = await resolve_reward_async(
            client,
            group,
            None,
            reason=s.reason,
            wait_s=max(0.0, deadline - time.monotonic()),
            group_size=s.task.group_size or group_size,
            all_unscored_value=all_unscored_value,
            poll_s=poll_s,
        )
    except TherapyGymError as e:
        # Never fail verl's step for one member: the documented neutral value, flagged.
        logger.error(
            "%s: no group value for a member of group %s (%s): score := all_unscored_value %.6g",
            UNSCORED_METRIC,
            group,
            e,
            all_unscored_value,
        )
        resolved = Resolved(float(all_unscored_value), True, e.kind, "constant")
    return _result(resolved, s.cut_short)


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
    poll_s: float = 2.0,
    **kwargs: Any,
) -> dict[str, float]:
    """verl custom reward function: the session reward from the interaction's final score.

    A scored session gives its reward. An unscored one (``NaN``) gets its group's
    ``scored_mean`` after ``GET /v1/groups/{group_id}``. One verl cut short (an even
    ``num_turns``: ``response_length`` or ``max_assistant_turns`` came first) is first abandoned
    on the service, so its group completes, then treated the same way. Validation/test rows and
    groups of one get ``all_unscored_value``, as does any member when the group does not
    complete within ``group_wait_s`` or the service fails: nothing raises into verl for one
    member. Returns ``{"score", "therapygym/unscored", "therapygym/cut_short"}``.
    ``base_url``, ``group_wait_s``, ``group_size``, ``all_unscored_value`` and ``poll_s`` come
    from ``custom_reward_function.reward_kwargs``; ``group_size`` defaults to the row's
    ``interaction_kwargs.group_size``, then to the service's ``--group-size``.
    """
    s = _sample(extra_info)
    if s.reward is not None:
        return _result(Resolved(s.reward, False), False)
    return asyncio.run(
        _score(
            s,
            solution_str,
            base_url=base_url,
            group_wait_s=group_wait_s,
            group_size=group_size,
            all_unscored_value=all_unscored_value,
            poll_s=poll_s,
        )
    )


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
    return await _score(
        _sample(extra_info),
        solution_str,
        base_url=base_url,
        group_wait_s=group_wait_s,
        group_size=group_size,
        all_unscored_value=all_unscored_value,
        poll_s=poll_s,
    )
