"""Chat templates: a conversation (system / user / assistant turns) as the text a model reads.

A template is data, stored beside the model as ``chat_template.json``, so training, ``plait
chat`` and ``plait serve`` render a conversation the same way::

    {"turns": {"system": "<|system|>{content}<|end|>\\n",
               "user": "<|user|>{content}<|end|>\\n",
               "assistant": "<|assistant|>{content}<|end|>\\n"},
     "generation_prompt": "<|assistant|>", "stop": ["<|end|>"]}

``render(messages)`` writes every turn and then the generation prompt, where the model's answer
begins; the answer ends at the first ``stop`` string (or the tokenizer's end-of-text token).
``spans(messages)`` gives the same text in pieces marked assistant or not, so that fine-tuning
can put its loss on the assistant's words (and their closing stop string) only.

A folder without a template gets :data:`PLAIN`: ``role: content`` lines ending with
``assistant:``, which any language model can continue, a character-level one included.
Only ``{content}`` is replaced in a turn's format, so braces in a message are kept as written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.io import atomic_write_text, read_json

TEMPLATE_FILE = "chat_template.json"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatTemplate:
    """How each role's turn is written, where the answer begins, and what ends it."""

    turns: Mapping[str, str]
    generation_prompt: str
    stop: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        missing = [r for r in ROLES if r not in self.turns]
        bad = [r for r, f in self.turns.items() if "{content}" not in f]
        if missing or bad:
            raise ValueError(f"a chat template needs a format holding {{content}} for each of"
                             f" {', '.join(ROLES)} (missing: {missing or 'none'}; without"
                             f" {{content}}: {bad or 'none'})")
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatTemplate:
        return cls(dict(data["turns"]), str(data["generation_prompt"]),
                   tuple(data.get("stop", ())))

    def to_dict(self) -> dict[str, Any]:
        return {"turns": dict(self.turns), "generation_prompt": self.generation_prompt,
                "stop": list(self.stop)}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / TEMPLATE_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def spans(self, messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, bool]]:
        """The conversation as (text, is the assistant's words) pieces, in order. An
        assistant turn gives its prefix (not trained), its content and suffix (trained)."""
        out: list[tuple[str, bool]] = []
        for m in check_messages(messages):
            head, tail = self.turns[m["role"]].split("{content}", 1)
            if m["role"] == "assistant":
                out += [(head, False), (m["content"] + tail, True)]
            else:
                out.append((head + m["content"] + tail, False))
        return [(t, a) for t, a in out if t]

    def render(self, messages: Sequence[Mapping[str, Any]],
               add_generation_prompt: bool = True) -> str:
        """The text of the conversation, then the generation prompt (the answer's start)."""
        text = "".join(t for t, _ in self.spans(messages))
        return text + self.generation_prompt if add_generation_prompt else text


PLAIN = ChatTemplate({r: f"{r}: {{content}}\n" for r in ROLES}, "assistant:",
                     ("\nuser:", "\nsystem:", "\nassistant:"))


def check_messages(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The messages, each a role of :data:`ROLES` with string content; else a ValueError
    naming the first bad one."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError("messages must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, Mapping) else None
        if role not in ROLES:
            raise ValueError(f"messages[{i}]: role must be one of {', '.join(ROLES)}, got"
                             f" {role!r}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}]: content must be a string")
    return list(messages)


def load_template(folder: str | Path) -> ChatTemplate:
    """The folder's ``chat_template.json``, or :data:`PLAIN` when it has none."""
    path = Path(folder) / TEMPLATE_FILE
    if not path.is_file():
        return PLAIN
    try:
        return ChatTemplate.from_dict(read_json(path))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a chat template ({e})") from None


__all__ = ["PLAIN", "ROLES", "TEMPLATE_FILE", "ChatTemplate", "check_messages", "load_template"]
