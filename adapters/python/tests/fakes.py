"""Engine stand-ins for the adapter tests: a tiny tokenizer with a ChatML (or Llama 3) chat
template, a scripted policy, and OpenRLHF's multi-turn loop re-enacted on them."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from typing import Any

CHATML_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
_OFFSET = 1000  # ordinary characters are tokens _OFFSET + code point


class FakeTokenizer:
    """Character tokens plus one token per special marker; ``apply_chat_template`` renders
    ChatML (``style="chatml"``) or Llama 3 (``style="llama3"``) like the real templates."""

    def __init__(self, style: str = "chatml") -> None:
        self.style = style
        self.specials = CHATML_SPECIALS + LLAMA3_SPECIALS
        self.special_ids = {s: i + 1 for i, s in enumerate(self.specials)}
        self.id_special = {i: s for s, i in self.special_ids.items()}
        self.eos_token = "<|im_end|>" if style == "chatml" else "<|eot_id|>"
        self.eos_token_id = self.special_ids[self.eos_token]
        self.pad_token_id = self.special_ids["<|endoftext|>"]

    def apply_chat_template(
        self,
        messages: list[dict[str, str]],
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        **kwargs: Any,
    ) -> Any:
        if self.style == "chatml":
            text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
            if add_generation_prompt:
                text += "<|im_start|>assistant\n"
        else:
            text = "<|begin_of_text|>" + "".join(
                f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>"
                for m in messages
            )
            if add_generation_prompt:
                text += "<|start_header_id|>assistant<|end_header_id|>\n\n"
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids: list[int] = []
        i = 0
        while i < len(text):
            for s in self.specials:
                if text.startswith(s, i):
                    ids.append(self.special_ids[s])
                    i += len(s)
                    break
            else:
                ids.append(_OFFSET + ord(text[i]))
                i += 1
        return ids

    def __call__(self, text: str, add_special_tokens: bool = True, return_tensors: Any = None) -> dict:
        return {"input_ids": [self.encode(text, add_special_tokens=add_special_tokens)]}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        out = []
        for t in ids:
            if t in self.id_special:
                if not skip_special_tokens:
                    out.append(self.id_special[t])
            else:
                out.append(chr(t - _OFFSET))
        return "".join(out)


def therapist_text(turn: int, salt: int) -> str:
    return f"Turn {turn} (#{salt}): what went through your mind just then?"


class ScriptedPolicy:
    """A ``generate`` callback: each turn says something that depends on the turn number and on
    the row (so members of a group differ), then EOS; logprob -0.5 per token."""

    def __init__(self, tok: FakeTokenizer, *, eos: bool = True, extra_tokens: int = 0) -> None:
        self.tok = tok
        self.eos = eos
        self.extra_tokens = extra_tokens
        self.calls: list[int] = []
        self.max_tokens: list[int | None] = []
        self.prompt_lengths: list[list[int]] = []
        self._salts = itertools.count(1)

    def turn_of(self, ids: list[int]) -> int:
        header = self.tok.encode(
            "<|im_start|>assistant\n" if self.tok.style == "chatml" else "<|start_header_id|>assistant"
        )
        n = 0
        for i in range(len(ids) - len(header) + 1):
            if ids[i : i + len(header)] == header:
                n += 1
        return n

    def __call__(self, batch: list[list[int]], max_tokens: int | None = None) -> list[tuple[list[int], list[float]]]:
        """Like vLLM: at most ``max_tokens`` tokens per completion (then no EOS)."""
        self.calls.append(len(batch))
        self.max_tokens.append(max_tokens)
        self.prompt_lengths.append([len(ids) for ids in batch])
        out = []
        for ids in batch:
            # A new row gets the next salt; later turns reuse the salt found in the history.
            found = re.search(r"\(#(\d+)\)", self.tok.decode(ids))
            salt = int(found.group(1)) if found else next(self._salts)
            text = therapist_text(self.turn_of(ids), salt) + "x" * self.extra_tokens
            toks = self.tok.encode(text, add_special_tokens=False)
            if self.eos:
                toks.append(self.tok.eos_token_id)
            if max_tokens is not None:
                toks = toks[:max_tokens]
            out.append((toks, [-0.5] * len(toks)))
        return out


class SamplingParams:
    """What the OpenRLHF agent reads from vLLM's sampling params."""

    def __init__(self, max_tokens: int | None = None) -> None:
        self.max_tokens = max_tokens
        self.logprobs = None


async def run_openrlhf_like(
    executor: Any,
    tok: FakeTokenizer,
    label: Any,
    *,
    prompt: str = "placeholder prompt",
    max_length: int = 100_000,
    texts: list[str] | None = None,
    eos_in_tokens: bool = True,
    sampling_params: "SamplingParams | None" = None,
    generate_delay_s: float = 0.0,
) -> dict:
    """OpenRLHF 0.11's ``MultiTurnAgentExecutor.execute`` re-enacted with a scripted policy: the
    action tokens are the turn's text plus EOS (vLLM returns EOS among the token ids; the text
    omits it), environment feedback is tokenized with ``add_special_tokens=False`` and appended.
    Pass one ``sampling_params`` to every sample of a prompt: OpenRLHF's vLLM engine shares one
    object among them and sets its ``max_tokens`` before each sample's generation, which is an
    ``await`` (``generate_delay_s``) during which the other samples run."""
    instance = executor.agent_instance_cls()
    reset = await instance.reset({"observation": prompt, "label": label})
    observation_text = reset["observation"]
    tokens = tok(text=observation_text, add_special_tokens=False)["input_ids"][0]
    action_ranges = []
    total_reward = 0.0
    scores = None
    extra_logs: dict = {}
    sp = sampling_params if sampling_params is not None else SamplingParams()
    turn = 0
    actions = []
    feedbacks = []
    step_rewards: list[float] = []
    while True:
        sp.max_tokens = max_length - len(tokens)
        if sp.max_tokens <= 0:
            break
        await asyncio.sleep(generate_delay_s)  # llm_engine.generate
        turn += 1
        text = texts[turn - 1] if texts else therapist_text(turn, 0)
        action_tokens = tok.encode(text, add_special_tokens=False)
        if eos_in_tokens:
            action_tokens = action_tokens + [tok.eos_token_id]
        action_ranges.append((len(tokens), len(tokens) + len(action_tokens)))
        result = await instance.step(
            {"observation_text": observation_text, "action_text": text, "label": label, "sampling_params": sp}
        )
        total_reward += result["rewards"].item()
        step_rewards.append(result["rewards"].item())
        scores = result.get("scores", total_reward)
        extra_logs = result.get("extra_logs", {})
        feedback = result["environment_feedback"]
        fb_tokens = tok(text=feedback, add_special_tokens=False)["input_ids"][0]
        observation_text = observation_text + text + feedback
        tokens = tokens + action_tokens + fb_tokens
        actions.append(text)
        feedbacks.append(feedback)
        if result.get("sampling_params"):
            sp = result["sampling_params"]
        if result["done"]:
            break
    return {
        "tokens": tokens,
        "action_ranges": action_ranges,
        "reward": total_reward,
        "scores": float(scores.item() if hasattr(scores, "item") else scores),
        "extra_logs": extra_logs,
        "actions": actions,
        "feedbacks": feedbacks,
        "episode_id": instance.episode_id,
        "turns": turn,
        "step_rewards": step_rewards,
        "label": json.loads(label) if isinstance(label, str) else label,
    }


async def run_verl_like(
    interaction: Any,
    kwargs: dict,
    texts: list[str],
    *,
    request_id: str | None = None,
    max_assistant_turns: int | None = None,
    response_length: int | None = None,
    system: str = "You are a CBT therapist.",
) -> dict:
    """verl's ``ToolAgentLoop.run`` (b178a3cd) re-enacted with one interaction: start, then per
    generated turn check ``response_length`` (characters stand in for tokens) and
    ``max_assistant_turns`` *before* the interaction sees the turn (TERMINATED without a call),
    else ``generate_response``; a not-None score goes to ``turn_scores``; the reply is appended as
    a user message. Returns what the reward loop hands ``compute_score``: ``num_turns`` = user +
    assistant turns + 1 and ``solution_str`` = the response decoded without special tokens."""
    import uuid  # noqa: PLC0415

    rid = request_id or uuid.uuid4().hex
    await interaction.start_interaction(rid, **kwargs)
    messages = [{"role": "system", "content": system}]
    turn_scores: list[float] = []
    user_turns = assistant_turns = 0
    response = ""
    done, info, cut = False, {}, False
    for text in texts:
        assistant_turns += 1
        messages.append({"role": "assistant", "content": text})
        response += f"assistant\n{text}\n"
        if response_length is not None and len(response) >= response_length:
            cut = True
            break
        if max_assistant_turns and assistant_turns >= max_assistant_turns:
            cut = True
            break
        done, reply, score, info = await interaction.generate_response(rid, messages, **kwargs)
        user_turns += 1
        messages.append({"role": "user", "content": reply})
        response += f"user\n{reply}\n"
        if score is not None:
            turn_scores.append(score)
        if done:
            break
    return {
        "request_id": rid,
        "messages": messages,
        "turn_scores": turn_scores,
        "num_turns": user_turns + assistant_turns + 1,
        "solution_str": response[:response_length] if response_length else response,
        "done": done,
        "cut_short": cut,
        "info": info,
        "extra_info": {"interaction_kwargs": kwargs, "turn_scores": turn_scores,
                       "num_turns": user_turns + assistant_turns + 1},
    }
