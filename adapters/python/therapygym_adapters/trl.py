"""TRL adapter: a ``rollout_func`` for ``GRPOTrainer`` that plays whole sessions against the
simulated patient, and the reward function that reads their rewards.

Checked against huggingface/trl ``f2cd57710ae345ea6428ae95363267fcf38a3dc8`` (2026-07-24,
``VERSION`` = 1.10.0.dev0), ``trl/trainer/grpo_trainer.py``:

- ``RolloutFunc = Callable[[list[str], GRPOTrainer], dict[str, Any]]``; ``_generate`` calls
  ``rollout_func(prompts, trainer)`` with this process's ``prompts`` (the dataset ``prompt``
  values as sampled by ``RepeatSampler``: each prompt ``num_generations`` times in a row; the
  docstring says "no duplication", the code and ``vllm_generation.generate``'s server path
  assume the duplicates) and requires the keys ``prompt_ids``, ``completion_ids``, ``logprobs``
  (one float per completion token); ``env_mask`` (1 = policy token, 0 = environment token) becomes
  the loss mask; every other key is merged into the inputs and reaches the reward functions as a
  keyword argument (one list element per row).
- Reward functions are called as ``f(prompts=, completions=, completion_ids=, **columns,
  trainer_state=, log_extra=, log_metric=)``; a ``None`` reward becomes NaN, NaN-aware group
  statistics leave it out and its advantage is 0.
- ``trl/generation/vllm_generation.py`` ``VLLMGeneration.generate(prompts, images,
  num_generations, profiler=None) -> (prompt_ids, completion_ids, logprobs, logprob_token_ids)``
  with top-k logprobs per token; in server mode all processes take part in every call and each
  process's slice is located by ``len(prompts)``, so every process must pass the same number of
  prompts the same number of times.

Do not use ``environment_factory``: it cannot express a simulated *user* turn (§5.3).

Dataset rows hold the task as the ``prompt``: the JSON text ``{"profile_id": …, "seed": …}``
(see :mod:`therapygym_adapters.datasets`); the rollout takes the system prompt (and the
patient's opening) from the service, so the policy sees exactly what ``eval`` uses.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ._common import (
    UNSCORED_METRIC,
    Task,
    abandon_quietly,
    check_id,
    log_service_info,
    new_episode_id,
    open_episode,
    parse_task,
)
from .client import TherapyGymClient, TherapyGymError

__all__ = ["TRL_REVISION", "make_rollout_func", "reward_func", "vllm_generate"]

TRL_REVISION = "huggingface/trl@f2cd57710ae345ea6428ae95363267fcf38a3dc8 (1.10.0.dev0)"

logger = logging.getLogger("therapygym_adapters")

#: ``generate(batch_of_token_id_lists, max_tokens=N) -> [(completion_ids, logprobs or None), …]``
#: (dicts with ``completion_ids`` and ``logprobs`` are accepted too). ``max_tokens`` is passed
#: when the callable accepts it: the most tokens any row of the batch may still use this turn.
GenerateFn = Callable[..., Sequence[Any]]

_SENTINEL = "TherapyGymSentinel7f3a"


def vllm_generate(trainer: Any) -> GenerateFn:
    """A generate callback over the trainer's own vLLM (``use_vllm=True``, server or colocate).

    TRL's ``VLLMGeneration.generate`` asks vLLM for ``self.max_completion_length`` tokens, read at
    each call: the callback sets it to the turn's ``max_tokens`` for the call and restores it."""

    def generate(batch: list[list[int]], max_tokens: int | None = None) -> list[tuple[list[int], list[float]]]:
        vg = trainer.vllm_generation
        saved = getattr(vg, "max_completion_length", None)
        if max_tokens is not None:
            vg.max_completion_length = int(max_tokens)
        try:
            _, completion_ids, logprobs, _ = vg.generate(prompts=batch, images=None, num_generations=1)
        finally:
            if max_tokens is not None:
                vg.max_completion_length = saved
        out = []
        for k, ids in enumerate(completion_ids):
            lps = logprobs[k] if logprobs is not None else None
            if lps is not None:
                lps = [lp[0] if isinstance(lp, (list, tuple)) else lp for lp in lps]
                lps = [float(x) if x is not None else 0.0 for x in lps]
            out.append((list(ids), lps))
        return out

    generate.collective = True  # type: ignore[attr-defined]
    return generate


@dataclass
class _Row:
    task: Task
    episode_id: str
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    done: bool = False
    final: dict | None = None
    reason: str | None = None  # why there is no judgment, when there is none
    pending: tuple[str, str] | None = None


def _eos_ids(tok: Any) -> set[int]:
    eos = getattr(tok, "eos_token_id", None)
    if isinstance(eos, int):
        return {eos}
    if isinstance(eos, (list, tuple, set)):
        return {int(e) for e in eos}
    return set()


def _as_ids(x: Any) -> list[int]:
    if isinstance(x, Mapping):
        x = x["input_ids"]
    x = list(x)
    if x and isinstance(x[0], (list, tuple)):
        x = list(x[0])
    return [int(i) for i in x]


class _Tokens:
    """Token bookkeeping through the policy tokenizer's own chat template."""

    def __init__(
        self, tok: Any, chat_template_kwargs: Mapping[str, Any] | None, eos_token_ids: Any = None
    ) -> None:
        self.tok = getattr(tok, "tokenizer", tok)  # a processor wraps its tokenizer
        self.kw = dict(chat_template_kwargs or {})
        self.eos = _eos_ids(self.tok) | {int(i) for i in (eos_token_ids or ())}

    def render(self, messages: list[Mapping[str, str]], gen: bool) -> str:
        return self.tok.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=gen, **self.kw
        )

    def encode(self, text: str) -> list[int]:
        return _as_ids(self.tok.encode(text, add_special_tokens=False))

    def prompt_ids(self, messages: list[Mapping[str, str]]) -> list[int]:
        return self.encode(self.render(messages, gen=True))

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def ended(self, ids: list[int]) -> bool:
        return bool(ids) and ids[-1] in self.eos

    def patient_ids(self, text: str, last_id: int | None) -> list[int]:
        """The tokens between a therapist turn and the next one: the rest of the assistant turn
        the generation did not produce, the patient's ``user`` turn and the generation prompt,
        exactly as the chat template renders them."""
        base = [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": _SENTINEL},
            {"role": "user", "content": text},
        ]
        rendered = self.render(base, gen=True)
        at = rendered.rfind(_SENTINEL)
        if at < 0:
            raise ValueError("the chat template dropped the assistant content; cannot place patient turns")
        tail = rendered[at + len(_SENTINEL) :]
        if last_id is not None and last_id in self.eos:
            # The generated EOS already closed the turn: do not add the end marker twice.
            eos_text = self.tok.decode([last_id], skip_special_tokens=False)
            if eos_text and tail.startswith(eos_text):
                tail = tail[len(eos_text) :]
        return self.encode(tail)


def _takes_max_tokens(fn: Any) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "max_tokens" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _unpack(out: Any) -> tuple[list[int], list[float] | None]:
    if isinstance(out, Mapping):
        return [int(i) for i in out["completion_ids"]], out.get("logprobs")
    ids, lps = out
    return [int(i) for i in ids], lps


def make_rollout_func(
    client: TherapyGymClient | None = None,
    generate: GenerateFn | None = None,
    tokenizer: Any = None,
    *,
    max_completion_length: int | None = None,
    max_turns: int | None = None,
    split: str | None = None,
    limits: Mapping[str, Any] | None = None,
    opening: str | None = None,
    task_from_prompt: Callable[[Any], Task] | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    max_workers: int = 32,
    close_on_done: bool = True,
    min_turn_tokens: int = 16,
    eos_token_ids: Sequence[int] | None = None,
    max_turn_tokens: int | None = None,
) -> Callable[..., dict[str, list]]:
    """A ``rollout_func(prompts, trainer)`` that plays one session per prompt.

    For every prompt (a task: JSON text or dict with ``profile_id`` and ``seed``, or whatever
    ``task_from_prompt`` parses) it creates an episode, then per therapist turn generates with
    ``generate`` (default: the trainer's vLLM) from the tokens so far, posts the decoded turn,
    and appends the patient's reply as tokens of the policy's chat template with ``env_mask`` 0
    and logprob 0.0. Completions end on the last therapist token. Returns ``prompt_ids``,
    ``completion_ids``, ``logprobs``, ``env_mask``, ``therapy_reward`` (float, or ``None`` for an
    unscored session: the judge could not score it, or the completion reached
    ``max_completion_length`` before the session ended) and ``therapy_info`` (status, reason,
    CTRS, safety, episode id).

    ``tokenizer`` (default ``trainer.processing_class``) needs ``apply_chat_template(messages,
    tokenize=False, add_generation_prompt=…)``, ``encode(text, add_special_tokens=False)``,
    ``decode(ids, skip_special_tokens=…)`` and ``eos_token_id``. ``max_completion_length``
    (default ``trainer.args.max_completion_length``) bounds all turns together. ``max_turns``
    defaults to ``limits.max_therapist_turns``, else the service's default. ``eos_token_ids`` adds
    stop tokens beyond ``tokenizer.eos_token_id`` (e.g. the model's ``generation_config``) that
    end a therapist turn. A session whose next
    therapist turn would have fewer than ``min_turn_tokens`` tokens left is ended (abandoned on
    the service) and unscored.

    Each turn generates only for the rows still playing and asks for at most what those rows may
    still use (``max_tokens``: the largest room left among them, capped by ``max_turn_tokens``).
    A collective ``generate`` (TRL's vLLM in server mode: every process must send as many prompts
    in as many calls) still gets one prompt per row, but a finished row sends a one-token
    placeholder and ``max_tokens`` is ``max_turn_tokens`` (or the whole budget), the same on
    every process; its output is dropped.
    """
    client = client or TherapyGymClient()
    parse = task_from_prompt or (lambda p: parse_task(p, what="prompt"))
    base_limits = dict(limits or {})

    def rollout_func(prompts: list[Any], trainer: Any = None) -> dict[str, list]:
        tok = _Tokens(
            tokenizer if tokenizer is not None else trainer.processing_class,
            chat_template_kwargs,
            eos_token_ids,
        )
        gen = generate if generate is not None else vllm_generate(trainer)
        collective = bool(getattr(gen, "collective", False))
        pass_max = _takes_max_tokens(gen)
        budget = max_completion_length or getattr(getattr(trainer, "args", None), "max_completion_length", None)
        if not budget:
            raise ValueError("max_completion_length is needed (pass it, or a trainer with args)")
        info = log_service_info(client) or {}
        turns = max_turns or base_limits.get("max_therapist_turns") or (
            (info.get("defaults") or {}).get("max_therapist_turns")
        )
        if not turns:
            raise ValueError("cannot tell the number of therapist turns: pass max_turns")
        rows = []
        for p in prompts:
            t = parse(p)
            merged_limits = {**base_limits, **dict(t.limits or {})} or None
            t = Task(
                t.profile_id,
                t.seed,
                t.split or split,
                t.group_id,
                t.group_size,
                merged_limits,
                t.opening or opening,
            )
            rows.append(_Row(task=t, episode_id=check_id("episode id", new_episode_id("trl"))))

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            created = list(
                pool.map(
                    lambda r: open_episode(client, r.task, r.episode_id),
                    rows,
                )
            )
            for r, c in zip(rows, created):
                r.prompt_ids = tok.prompt_ids(c["messages"])

            for turn in range(1, int(turns) + 1):
                active = [r for r in rows if not r.done]
                if not active and not collective:
                    break
                # A collective generate (TRL's vLLM) needs the same number of prompts from every
                # process in every call: finished rows send a one-token placeholder, and their
                # output is dropped.
                batch_rows = rows if collective else active
                batch = [
                    r.prompt_ids[:1] if r.done else r.prompt_ids + r.completion_ids for r in batch_rows
                ]
                if collective:
                    cap = int(max_turn_tokens or budget)
                else:
                    cap = max(budget - len(r.completion_ids) for r in active)
                    if max_turn_tokens:
                        cap = min(cap, int(max_turn_tokens))
                outs = list(gen(batch, max_tokens=max(1, cap)) if pass_max else gen(batch))
                if len(outs) != len(batch_rows):
                    raise ValueError(f"generate returned {len(outs)} outputs for {len(batch_rows)} prompts")
                for r, out in zip(batch_rows, outs):
                    if r.done:
                        continue
                    ids, lps = _unpack(out)
                    room = budget - len(r.completion_ids)
                    if max_turn_tokens:
                        room = min(room, int(max_turn_tokens))
                    ids = ids[:room]
                    lps = [float(x) for x in lps[: len(ids)]] if lps is not None else [0.0] * len(ids)
                    if len(lps) < len(ids):
                        lps += [0.0] * (len(ids) - len(lps))
                    r.completion_ids += ids
                    r.logprobs += lps
                    r.env_mask += [1] * len(ids)
                    r.pending = (tok.decode(ids), "stop" if tok.ended(ids) else "length")
                stepping = [r for r in active if r.pending is not None]
                answers = list(
                    pool.map(
                        lambda r: _step(client, r, turn),
                        stepping,
                    )
                )
                for r, resp in zip(stepping, answers):
                    r.pending = None
                    if isinstance(resp, TherapyGymError):
                        # The service failed for this row after the client's retries: end it
                        # (abandoned below, reward None) instead of failing TRL's step.
                        logger.error("%s: step %d of episode %s failed: %s", UNSCORED_METRIC, turn, r.episode_id, resp)
                        r.done, r.reason = True, resp.kind
                        continue
                    if resp.get("done"):
                        r.done, r.final = True, resp
                        continue
                    last = r.completion_ids[-1] if r.completion_ids else None
                    env = tok.patient_ids(_patient_text(resp.get("observation")), last)
                    if len(r.completion_ids) + len(env) + max(1, min_turn_tokens) > budget:
                        # No room for another therapist turn: the session cannot end in budget.
                        r.done, r.reason = True, "engine_truncated"
                        continue
                    r.completion_ids += env
                    r.logprobs += [0.0] * len(env)
                    r.env_mask += [0] * len(env)
            for r in rows:
                if not r.done:
                    r.done, r.reason = True, "not_finished"
            # Rows the service did not end are abandoned (masked; their groups complete), the
            # others deleted when they are done.
            cut = [r for r in rows if r.final is None]
            list(pool.map(lambda r: abandon_quietly(client, r.episode_id, r.reason or "engine_cut_short"), cut))
            ending = [r for r in rows if r.final is not None and close_on_done]
            list(pool.map(lambda r: _delete(client, r.episode_id), ending))

        rewards, infos = [], []
        for r in rows:
            reward, info = _outcome(r)
            rewards.append(reward)
            infos.append(info)
        n_unscored = sum(1 for x in rewards if x is None)
        if n_unscored:
            logger.warning("%s: %d of %d sessions in this rollout batch", UNSCORED_METRIC, n_unscored, len(rows))
        return {
            "prompt_ids": [r.prompt_ids for r in rows],
            "completion_ids": [r.completion_ids for r in rows],
            "logprobs": [r.logprobs for r in rows],
            "env_mask": [r.env_mask for r in rows],
            "therapy_reward": rewards,
            "therapy_info": infos,
        }

    return rollout_func


def _patient_text(observation: Any) -> str:
    parts = [m.get("content", "") for m in (observation or []) if isinstance(m, Mapping)]
    return "\n\n".join(p for p in parts if p)


def _step(client: TherapyGymClient, r: _Row, turn: int) -> "dict | TherapyGymError":
    assert r.pending is not None
    text, finish = r.pending
    try:
        return client.step(r.episode_id, text, turn, finish_reason=finish)
    except TherapyGymError as e:
        return e


def _delete(client: TherapyGymClient, episode_id: str) -> None:
    try:
        client.delete_episode(episode_id)
    except TherapyGymError as e:  # the TTL removes it anyway
        logger.warning("therapygym: DELETE episode %s failed: %s", episode_id, e)


def _outcome(r: _Row) -> tuple[float | None, dict[str, Any]]:
    info: dict[str, Any] = {"episode_id": r.episode_id, "group_id": r.task.group}
    if r.final is None:
        info.update(status="unscored", unscored_reason=r.reason)
        return None, info
    fi = r.final.get("info") or {}
    info.update(
        status=r.final.get("status"),
        unscored_reason=fi.get("unscored_reason"),
        ctrs=(fi.get("ctrs") or {}).get("normalized"),
        safety_any=(fi.get("safety") or {}).get("any"),
        end_reason=fi.get("end_reason"),
    )
    reward = r.final.get("reward")
    if r.final.get("status") == "scored" and isinstance(reward, (int, float)) and math.isfinite(reward):
        return float(reward), info
    info["status"] = "unscored"
    return None, info


def reward_func(
    prompts: Any = None,
    completions: Any = None,
    therapy_reward: Sequence[float | None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """``reward_funcs=[reward_func]``: the session rewards of the rollout, ``None`` where the
    session is unscored (TRL masks it: NaN-aware group statistics, advantage 0). Logs
    ``therapygym/unscored`` (the batch's unscored fraction) through TRL's ``log_metric``."""
    if therapy_reward is None:
        raise ValueError(
            "no `therapy_reward` column: use rollout_func=make_rollout_func(...) with this reward function"
        )
    out = [float(r) if r is not None else None for r in therapy_reward]
    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and out:
        log_metric(UNSCORED_METRIC, sum(1 for r in out if r is None) / len(out))
    return out
