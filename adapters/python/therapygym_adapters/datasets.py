"""Training datasets for the engines: one row per (profile, epoch), each with a fresh seed, so a
GRPO group ``(profile_id, seed)`` never repeats within a run (docs/design/seeds.md).

    python -m therapygym_adapters.datasets --engine verl --profiles data/profiles/examples.jsonl \\
        --epochs 3 --seed 1000 --out train.json [--url http://127.0.0.1:8700]

writes JSON Lines (``.json`` for verl, which picks the loader by extension; ``.jsonl`` works for
OpenRLHF and TRL). verl rows need the therapist's opening messages in the dataset (verl builds the
prompt before the interaction starts); they are read from the service by creating and deleting a
probe episode in a group of its own, so build them against the service you train with (the
probe is stored in its run directory with status ``expired``). OpenRLHF and TRL rows hold only the
task: their adapters take the opening messages from the service at rollout time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ._common import Task, new_episode_id, open_episode
from .client import TherapyGymClient

__all__ = [
    "read_profile_ids",
    "expand_tasks",
    "prompt_messages",
    "verl_rows",
    "openrlhf_rows",
    "trl_rows",
    "write_jsonl",
    "main",
]


def read_profile_ids(path: str | Path) -> list[str]:
    """Profile ids from a profiles file: JSON Lines (TherapyGym's format) or a JSON array
    (Patient-Ψ), each object with an ``id``."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        objs = json.loads(stripped)
    else:
        objs = [json.loads(line) for line in text.splitlines() if line.strip()]
    ids = [str(o["id"]) for o in objs if isinstance(o, Mapping) and "id" in o]
    if not ids:
        raise ValueError(f"{path}: no profile with an `id`")
    return ids


def expand_tasks(
    profile_ids: Sequence[str],
    *,
    epochs: int = 1,
    base_seed: int = 0,
    split: str | None = None,
    group_size: int | None = None,
    limits: Mapping[str, Any] | None = None,
    opening: str | None = None,
) -> list[Task]:
    """One task per profile and epoch; seed ``base_seed + epoch * len(profiles) + index`` is
    distinct for every row, so no ``(profile_id, seed)`` repeats."""
    n = len(profile_ids)
    return [
        Task(
            profile_id=pid,
            seed=base_seed + e * n + i,
            split=split,
            group_size=group_size,
            limits=dict(limits) if limits else None,
            opening=opening,
        )
        for e in range(epochs)
        for i, pid in enumerate(profile_ids)
    ]


def prompt_messages(client: TherapyGymClient, task: Task) -> list[dict[str, str]]:
    """The messages a new episode of ``task`` opens with (system prompt; with ``opening=patient``
    also the patient's opening line), read through a probe episode that is deleted at once."""
    probe = new_episode_id("probe")
    resp = open_episode(client, task, probe, probe)
    try:
        return [{"role": m["role"], "content": m["content"]} for m in resp["messages"]]
    finally:
        client.delete_episode(probe)


def verl_rows(
    tasks: Iterable[Task],
    messages_for: Callable[[Task], list[dict[str, str]]],
    *,
    interaction_name: str = "therapy",
    data_source: str = "therapygym",
) -> list[dict[str, Any]]:
    """verl rows: ``prompt`` (the opening messages), ``data_source``,
    ``reward_model.ground_truth`` (required by verl; the task), ``agent_name: tool_agent`` and
    ``extra_info.interaction_kwargs`` (``name``, ``profile_id``, ``seed``, …)."""
    rows = []
    for i, t in enumerate(tasks):
        kwargs: dict[str, Any] = {"name": interaction_name, "profile_id": t.profile_id, "seed": t.seed}
        for k in ("split", "group_size", "limits", "opening"):
            v = getattr(t, k)
            if v is not None:
                kwargs[k] = dict(v) if k == "limits" else v
        rows.append(
            {
                "data_source": data_source,
                "prompt": messages_for(t),
                "ability": "therapy",
                "reward_model": {"style": "rule", "ground_truth": t.to_json()},
                "agent_name": "tool_agent",
                "extra_info": {"index": i, "interaction_kwargs": kwargs},
            }
        )
    return rows


def openrlhf_rows(tasks: Iterable[Task]) -> list[dict[str, str]]:
    """OpenRLHF rows: ``prompt`` (replaced by the service's opening messages at ``reset``) and
    ``label`` (``--data.label_key label``), both the task as JSON."""
    return [{"prompt": t.to_json(), "label": t.to_json()} for t in tasks]


def trl_rows(tasks: Iterable[Task]) -> list[dict[str, str]]:
    """TRL rows: ``prompt`` = the task as JSON (read by the rollout function)."""
    return [{"prompt": t.to_json()} for t in tasks]


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m therapygym_adapters.datasets",
        description="Write a TherapyGym training dataset for verl, OpenRLHF or TRL.",
    )
    ap.add_argument("--engine", required=True, choices=["verl", "openrlhf", "trl"])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--profiles", help="profiles file (JSONL, or a Patient-Ψ JSON array)")
    src.add_argument("--profile-ids", nargs="+", help="profile ids")
    ap.add_argument("--epochs", type=int, default=1, help="rows per profile, each with a new seed")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--split", choices=["train", "val", "test"], default=None)
    ap.add_argument("--group-size", type=int, default=None,
                    help="members per group when it differs from the service's --group-size (e.g. 1 for validation)")
    ap.add_argument("--turns", type=int, default=None, help="limits.max_therapist_turns")
    ap.add_argument("--max-total-tokens", type=int, default=None, help="limits.max_total_tokens")
    ap.add_argument("--opening", choices=["therapist", "patient"], default=None)
    ap.add_argument("--url", default=None, help="the service, for verl prompts (default $THERAPYGYM_URL)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    ids = read_profile_ids(a.profiles) if a.profiles else list(a.profile_ids)
    limits = {
        k: v
        for k, v in (("max_therapist_turns", a.turns), ("max_total_tokens", a.max_total_tokens))
        if v is not None
    }
    tasks = expand_tasks(
        ids,
        epochs=a.epochs,
        base_seed=a.seed,
        split=a.split,
        group_size=a.group_size,
        limits=limits or None,
        opening=a.opening,
    )
    if a.engine == "verl":
        client = TherapyGymClient(a.url)
        cache: dict[Any, list[dict[str, str]]] = {}
        per_task: set[Any] = set()

        def messages_for(t: Task) -> list[dict[str, str]]:
            # The system prompt depends on the limits, opening and split only; an opening patient
            # line also on the task itself, so those are read per task.
            key = (json.dumps(t.limits, sort_keys=True), t.opening, t.split)
            if key in per_task:
                return prompt_messages(client, t)
            if key not in cache:
                msgs = prompt_messages(client, t)
                if any(m["role"] != "system" for m in msgs):
                    per_task.add(key)
                    return msgs
                cache[key] = msgs
            return cache[key]

        rows = verl_rows(tasks, messages_for)
    elif a.engine == "openrlhf":
        rows = openrlhf_rows(tasks)
    else:
        rows = trl_rows(tasks)
    n = write_jsonl(rows, a.out)
    print(f"wrote {n} {a.engine} rows ({len(ids)} profiles x {a.epochs} epochs) to {a.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
