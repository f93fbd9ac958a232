"""Who translates: a checkpoint of ours, or a model behind an OpenAI-compatible server.

Both take the strings to translate and report each translation, or the ``Failure`` of its
request, as it arrives (``each(index, reply)``), so that the journal keeps it at once. The
answer length of a string is a power of two with room for about twice its characters in tokens
(`token_budget`), at most ``max_new_tokens``: strings of one budget go together, so that a
runaway answer stops early and a checkpoint compiles few shapes. Replies are stripped of
surrounding whitespace and of one pair of quotes that the source did not have.

- `ServerBackend`: any OpenAI-compatible chat completions server through
  `runtime.openai_api.ChatClient` (bounded concurrency, retries, failures by kind); the system
  message and the few-shot examples go as chat messages.
- `CheckpointBackend`: a checkpoint's batched greedy decoding (`eval.runner.Generator`'s call:
  ``generate(prompts, images, max_new_tokens) -> answers``), the instructions and examples in
  the one user message its chat template renders; ``chunk`` strings per call (the journal is
  written after each call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from basque_vlm.datagen.translation_prompt import Prompt
from basque_vlm.runtime.openai_api import ChatClient, Failure

Each = Callable[[int, "str | Failure"], None]
Generate = Callable[[Sequence[str], Sequence[None], int], list[str]]
MIN_BUDGET = 16
_QUOTES = {'"': '"', "'": "'", "“": "”", "«": "»", "‘": "’"}


def token_budget(text: str, max_new_tokens: int) -> int:
    """The answer length for ``text``: the power of two at or above half its characters plus
    ``MIN_BUDGET``, at most ``max_new_tokens``."""
    need = len(text) // 2 + MIN_BUDGET
    return min(max_new_tokens, 1 << (need - 1).bit_length())


def clean(reply: str, source: str) -> str:
    """``reply`` without surrounding whitespace, nor a pair of quotes around all of it that
    ``source`` does not have."""
    reply = reply.strip()
    if len(reply) >= 2 and _QUOTES.get(reply[0]) == reply[-1] and \
            _QUOTES.get(source.strip()[:1]) != source.strip()[-1:]:
        reply = reply[1:-1].strip()
    return reply


def by_budget(texts: Sequence[str], max_new_tokens: int) -> dict[int, list[int]]:
    """The indices of ``texts`` by answer length, shortest budget first, in order within."""
    groups: dict[int, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(token_budget(text, max_new_tokens), []).append(i)
    return dict(sorted(groups.items()))


class ServerBackend:
    """Translations by ``client``'s model, sampled at ``temperature`` (0: greedy)."""

    def __init__(self, client: ChatClient, prompt: Prompt, max_new_tokens: int,
                 temperature: float = 0.0):
        self.client, self.prompt = client, prompt
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def about(self) -> dict[str, Any]:
        """What the journal records of the backend."""
        return {"backend": "server", "model": self.client.model, "temperature": self.temperature}

    def translate(self, texts: Sequence[str], each: Each) -> None:
        for budget, indices in by_budget(texts, self.max_new_tokens).items():
            def arrived(j: int, reply: str | Failure, indices: list[int] = indices) -> None:
                i = indices[j]
                each(i, reply if isinstance(reply, Failure) else clean(reply, texts[i]))

            self.client.complete_all((self.prompt.messages(texts[i]) for i in indices),
                                     each=arrived, max_tokens=budget,
                                     temperature=self.temperature)


class CheckpointBackend:
    """Greedy translations by ``generate`` (a checkpoint's), ``chunk`` strings per call;
    ``name`` says which checkpoint."""

    def __init__(self, generate: Generate, name: str, prompt: Prompt, max_new_tokens: int,
                 chunk: int):
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.generate, self.name, self.prompt = generate, name, prompt
        self.max_new_tokens, self.chunk = max_new_tokens, chunk

    def about(self) -> dict[str, Any]:
        return {"backend": "checkpoint", "model": self.name, "temperature": 0.0}

    def translate(self, texts: Sequence[str], each: Each) -> None:
        for budget, indices in by_budget(texts, self.max_new_tokens).items():
            indices = sorted(indices, key=lambda i: len(texts[i]))
            for start in range(0, len(indices), self.chunk):
                part = indices[start:start + self.chunk]
                replies = self.generate([self.prompt.single(texts[i]) for i in part],
                                        [None] * len(part), budget)
                for i, reply in zip(part, replies):
                    each(i, clean(reply, texts[i]))
