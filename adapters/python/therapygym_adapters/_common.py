"""What the engine adapters share: tasks, the unscored-session rule (docs/rl-engines.md),
a thread pool for calling the blocking client from engines' event loops, and start-up logging."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .client import TherapyGymClient, TherapyGymError

logger = logging.getLogger("therapygym_adapters")

#: The per-sample metric every adapter logs: 1.0 when the session had no judgment of its own.
UNSCORED_METRIC = "therapygym/unscored"

_ALLOWED_ID = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


def new_episode_id(prefix: str) -> str:
    """A fresh episode id in the service's id alphabet (at most 128 characters)."""
    return f"{prefix}-{uuid.uuid4().hex}"


def check_id(what: str, value: str) -> str:
    if not value or len(value) > 128 or not set(value) <= _ALLOWED_ID:
        raise ValueError(
            f"{what} {value!r}: ids are 1-128 characters from [A-Za-z0-9._:-] (docs/serve.md)"
        )
    return value


@dataclass(frozen=True)
class Task:
    """One GRPO group's task: the members of a group share ``(profile_id, seed)``."""

    profile_id: str
    seed: int
    split: str | None = None
    group_id: str | None = None
    group_size: int | None = None
    limits: Mapping[str, Any] | None = None
    opening: str | None = None

    @property
    def group(self) -> str:
        return self.group_id or f"{self.profile_id}:{self.seed}"

    def to_json(self) -> str:
        """The task as the compact JSON string datasets carry (OpenRLHF label, TRL prompt)."""
        d: dict[str, Any] = {"profile_id": self.profile_id, "seed": self.seed}
        for k in ("split", "group_id", "group_size", "limits", "opening"):
            v = getattr(self, k)
            if v is not None:
                d[k] = dict(v) if k == "limits" else v
        return json.dumps(d, separators=(",", ":"), sort_keys=True)


_TASK_KEYS = {"profile_id", "seed", "split", "group_id", "group_size", "limits", "opening"}


def parse_task(value: Any, *, what: str = "task") -> Task:
    """A task from a dict or a JSON string holding ``profile_id`` and ``seed`` (other keys of a
    dict, such as verl's interaction ``name``, are ignored)."""
    obj = value
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    if isinstance(value, str):
        try:
            obj = json.loads(value)
        except ValueError as e:
            raise ValueError(
                f"{what} {value[:200]!r} is not JSON; expected {{\"profile_id\": ..., \"seed\": ...}}"
            ) from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"{what} must be an object with profile_id and seed, not {type(obj).__name__}")
    if "profile_id" not in obj or "seed" not in obj:
        raise ValueError(f"{what} {dict(obj)!r} lacks profile_id or seed")
    seed = obj["seed"]
    if isinstance(seed, bool) or not isinstance(seed, (int, float, str)):
        raise ValueError(f"{what}: seed {seed!r} is not an integer")
    try:
        seed_int = int(seed)
    except ValueError as e:
        raise ValueError(f"{what}: seed {seed!r} is not an integer") from e
    if isinstance(seed, float) and seed != seed_int:
        raise ValueError(f"{what}: seed {seed!r} is not an integer")
    kw = {k: obj.get(k) for k in _TASK_KEYS - {"profile_id", "seed"}}
    if kw["group_size"] is not None:
        kw["group_size"] = int(kw["group_size"])
    return Task(profile_id=str(obj["profile_id"]), seed=seed_int, **kw)


def is_solo(task: Task) -> bool:
    """Validation and test rollouts (split ``val``/``test``) and groups of one are never
    imputed from group mates: each episode is its own group (:func:`solo_group`)."""
    return task.split in ("val", "test") or task.group_size == 1


def solo_group(task: Task, episode_id: str) -> str:
    """A group id of its own for one episode of ``task``: verl duplicates validation rows to pad
    a batch and reuses them at every validation, so keying per episode means no group ever
    overflows and no fallback reads another round's members."""
    gid = f"{task.group}:ep:{episode_id}"
    if len(gid) > 128:
        gid = f"{task.group[:60]}:ep:{uuid.uuid5(uuid.NAMESPACE_URL, gid).hex}"
    return gid


# ---------------------------------------------------------------------------------------------
# Unscored sessions (docs/rl-engines.md, "Unscored sessions")


@dataclass(frozen=True)
class Resolved:
    """The reward an engine without a per-sample mask trains on.

    ``unscored`` is True when the session had no judgment of its own (judge failure, or the
    engine stopped the episode before the service ended it); ``value`` is then the group's
    ``scored_mean`` (advantage exactly 0, group mean unchanged) or, when no member of the group
    was scored, the same constant for every member (all advantages 0).
    """

    value: float
    unscored: bool
    reason: str | None = None
    source: str = "judge"  # judge | scored_mean | constant

    @property
    def metric(self) -> float:
        return 1.0 if self.unscored else 0.0


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _from_group(
    g: Mapping[str, Any], group_id: str, reason: str | None, all_unscored_value: float
) -> Resolved:
    mean = g.get("scored_mean")
    if _is_number(mean):
        resolved = Resolved(float(mean), True, reason, "scored_mean")
    else:
        resolved = Resolved(float(all_unscored_value), True, reason, "constant")
    logger.warning(
        "%s=1 group %s (%s): reward := %s = %.6g (%s of %s members scored)",
        UNSCORED_METRIC,
        group_id,
        reason or "unscored",
        resolved.source,
        resolved.value,
        g.get("scored"),
        g.get("group_size"),
    )
    return resolved


def _incomplete(g: Mapping[str, Any], group_id: str, wait_s: float) -> TherapyGymError:
    members = ", ".join(
        f"{m.get('episode_id')}={m.get('status')}" for m in g.get("members", [])
    )
    return TherapyGymError(
        "group_incomplete",
        0,
        f"group {group_id} did not complete within {wait_s:g} s "
        f"({g.get('finished')} of {g.get('group_size')} members finished: {members}); an unscored "
        "member needs the group's scored_mean (docs/rl-engines.md). Check that every member "
        "of the group reaches the end of its episode (engine turn and token limits above the "
        "service's), that the engine's group size equals the service's --group-size, or raise "
        "group_wait_s.",
        group_id=group_id,
    )


def resolve_reward(
    client: TherapyGymClient,
    group_id: str,
    reward: Any,
    *,
    reason: str | None = None,
    wait_s: float = 600.0,
    group_size: int | None = None,
    all_unscored_value: float = 0.0,
) -> Resolved:
    """The reward of a session, imputing ``scored_mean`` when it has none (blocking wait)."""
    if _is_number(reward):
        return Resolved(float(reward), False)
    g = client.group(group_id, wait_s=wait_s, group_size=group_size)
    if not g.get("complete"):
        raise _incomplete(g, group_id, wait_s)
    return _from_group(g, group_id, reason, all_unscored_value)


async def resolve_reward_async(
    client: TherapyGymClient,
    group_id: str,
    reward: Any,
    *,
    reason: str | None = None,
    wait_s: float = 600.0,
    group_size: int | None = None,
    all_unscored_value: float = 0.0,
    poll_s: float = 2.0,
) -> Resolved:
    """Like :func:`resolve_reward`, for event loops: short polls, so a waiting member holds no
    thread that its group mates' steps need."""
    if _is_number(reward):
        return Resolved(float(reward), False)
    deadline = time.monotonic() + wait_s
    while True:
        g = await run_blocking(client.group, group_id, wait_s=0, group_size=group_size)
        if g.get("complete"):
            return _from_group(g, group_id, reason, all_unscored_value)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _incomplete(g, group_id, wait_s)
        await asyncio.sleep(min(poll_s, left))


def open_episode(
    client: TherapyGymClient, task: Task, episode_id: str, group_id: str | None = None
) -> dict:
    """Creates the episode that plays `task` (in its group unless `group_id` names another)."""
    return client.create_episode(
        task.profile_id,
        task.seed,
        episode_id=episode_id,
        group_id=task.group if group_id is None else group_id,
        split=task.split,
        limits=task.limits,
        opening=task.opening,
    )


def abandon_quietly(client: TherapyGymClient, episode_id: str, reason: str) -> None:
    """``POST /v1/episodes/{id}/abandon``, logging (not raising) a failure: the service's TTL
    ends the episode anyway, and one member must never fail the engine's step."""
    try:
        client.abandon_episode(episode_id, reason)
    except TherapyGymError as e:
        logger.warning("therapygym: abandoning episode %s failed: %s", episode_id, e)


# ---------------------------------------------------------------------------------------------
# Blocking calls from event loops (verl agent loops and OpenRLHF's vLLM actors are asyncio; a
# blocking HTTP call there would stall every rollout of the worker while a patient speaks).

_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            n = int(os.environ.get("THERAPYGYM_ADAPTER_THREADS", "64"))
            _POOL = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, n), thread_name_prefix="therapygym"
            )
        return _POOL


async def run_blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool(), lambda: fn(*args, **kwargs))


# ---------------------------------------------------------------------------------------------
# Start-up metadata (adapters log GET /v1/info once; docs/serve.md)

_INFO_LOGGED: dict[str, dict] = {}
_INFO_LOCK = threading.Lock()


def log_service_info(client: TherapyGymClient) -> dict | None:
    """Logs ``GET /v1/info`` once per service URL and process; returns it (None if unreachable,
    which is logged: the first real call will raise with the reason)."""
    with _INFO_LOCK:
        if client.base_url in _INFO_LOGGED:
            return _INFO_LOGGED[client.base_url]
    try:
        info = client.info()
    except TherapyGymError as e:
        logger.warning("therapygym: GET /v1/info failed at %s: %s", client.base_url, e)
        return None
    keep = {
        k: info.get(k)
        for k in (
            "protocol",
            "version",
            "rubric",
            "safety_taxonomy",
            "config_hash",
            "group_size",
            "patient",
            "judge",
            "defaults",
        )
    }
    logger.info("therapygym service %s: %s", client.base_url, json.dumps(keep, sort_keys=True))
    with _INFO_LOCK:
        _INFO_LOGGED[client.base_url] = info
    return info


def client_from(config: Mapping[str, Any] | None) -> TherapyGymClient:
    """A client from an adapter config (``base_url``, ``timeout_s``, ``max_retries``)."""
    config = config or {}
    kw: dict[str, Any] = {}
    if config.get("timeout_s") is not None:
        kw["timeout_s"] = float(config["timeout_s"])
    if config.get("max_retries") is not None:
        kw["max_retries"] = int(config["max_retries"])
    return TherapyGymClient(config.get("base_url"), **kw)
