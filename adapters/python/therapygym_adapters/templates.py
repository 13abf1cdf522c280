"""Chat markup for engines that splice text into token streams themselves (OpenRLHF's
``environment_feedback`` is tokenized as raw text with ``add_special_tokens=False``), and for
building ``/get_reward`` queries.

Only the markup the service's ``/get_reward`` parser knows is predefined (``--chat-format
chatml|llama3``); any other template is a :class:`ChatTemplate` with its own strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

__all__ = ["ChatTemplate", "CHATML", "LLAMA3", "TEMPLATES", "get_template"]


@dataclass(frozen=True)
class ChatTemplate:
    """A turn-based chat markup: ``bos`` once, then per message
    ``turn_start.format(role=…) + content + turn_end + separator``; a generation prompt is
    ``turn_start.format(role="assistant")``."""

    name: str
    turn_start: str
    turn_end: str
    separator: str = ""
    bos: str = ""

    def header(self, role: str) -> str:
        return self.turn_start.format(role=role)

    def turn(self, role: str, content: str) -> str:
        return self.header(role) + content + self.turn_end + self.separator

    def render(
        self, messages: Iterable[Mapping[str, str]], *, add_generation_prompt: bool = False
    ) -> str:
        """The whole conversation, as ``tokenizer.apply_chat_template(..., tokenize=False)``
        renders it for templates without extra rules."""
        text = self.bos + "".join(self.turn(m["role"], m["content"]) for m in messages)
        if add_generation_prompt:
            text += self.header("assistant")
        return text

    def ends_turn(self, action_text: str) -> bool:
        """Whether generated text already carries the end-of-turn marker."""
        return action_text.rstrip().endswith(self.turn_end)

    def user_feedback(self, text: str, *, close_assistant: bool) -> str:
        """The text that follows a therapist turn and hands the next turn back to the policy:
        [end of the assistant turn] + separator + the patient's ``user`` turn + a generation
        prompt. ``close_assistant`` is False when the generated tokens already end with the
        end-of-turn marker (the policy's EOS token is the marker, as for ChatML instruct models
        and Llama 3's ``<|eot_id|>``): adding it again would put two end markers in the stream.
        """
        close = self.turn_end if close_assistant else ""
        return close + self.separator + self.turn("user", text) + self.header("assistant")

    def final_feedback(self, *, close_assistant: bool) -> str:
        """The text after the last therapist turn: only a missing end marker."""
        return self.turn_end if close_assistant else ""


#: ChatML (Qwen, SmolLM, many others): ``<|im_start|>role\n…<|im_end|>\n``.
CHATML = ChatTemplate(
    name="chatml",
    turn_start="<|im_start|>{role}\n",
    turn_end="<|im_end|>",
    separator="\n",
)

#: Llama 3 / 3.x: ``<|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>``.
LLAMA3 = ChatTemplate(
    name="llama3",
    turn_start="<|start_header_id|>{role}<|end_header_id|>\n\n",
    turn_end="<|eot_id|>",
    separator="",
    bos="<|begin_of_text|>",
)

TEMPLATES = {t.name: t for t in (CHATML, LLAMA3)}


def get_template(template: "str | ChatTemplate | None") -> ChatTemplate:
    """A template by name (``chatml``, ``llama3``) or as is; None means ChatML."""
    if template is None:
        return CHATML
    if isinstance(template, ChatTemplate):
        return template
    try:
        return TEMPLATES[str(template).lower()]
    except KeyError:
        raise ValueError(
            f"unknown chat template {template!r}: use one of {sorted(TEMPLATES)} or pass a ChatTemplate"
        ) from None
