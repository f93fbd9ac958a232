"""Render a conversation with the tokenizer's own chat template; labels from prefix renders.

The ids are exactly ``tokenizer.apply_chat_template(messages, tokenize=True)`` (up to the last
assistant message: a trailing user message carries no loss and is dropped). For each assistant
message ``k`` the template renders ``messages[:k]`` with the generation prompt and
``messages[:k+1]`` without; the tokens between the two are the assistant turn. Its supervised part
runs through the last special token of the turn, the end of turn (``<|eot_id|>``, ``<|im_end|>``):
a newline the template writes after it is never generated, so it carries no loss. A template whose
renders are not prefixes of each other raises ``TemplateError`` rather than yield wrong labels.

Labels follow the same-position convention of big_vision/MaxText: ``targets[i]`` is the token after
``input_ids[i]`` and ``loss_mask[i]`` says whether it is supervised, so the loss is plain
cross-entropy of ``logits[i]`` against ``targets[i]`` weighted by ``loss_mask[i]`` (no shift in the
loss). Image, system, user, generation-prompt and pad tokens never carry loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from basque_vlm.data.conversation import IMAGE_PLACEHOLDER, Conversation
from basque_vlm.data.errors import DataError, ErrorKind

# Llama-3.1's reserved padding token: the fallback when the pad token is an end of turn.
FALLBACK_PAD = "<|finetune_right_pad_id|>"


class TemplateError(ValueError):
    """The chat template cannot give message-by-message labels (a setup error, not a data one)."""


@dataclasses.dataclass(frozen=True)
class Example:
    input_ids: np.ndarray  # int32 [L], each image placeholder expanded to tokens_per_image ids
    targets: np.ndarray    # int32 [L]: input_ids shifted left by one; the last one is the pad id
    loss_mask: np.ndarray  # int32 [L]: 1 where targets[i] is supervised
    num_images: int        # images kept: the first num_images of the conversation's images
    language: str | None


class ChatRenderer:
    """Conversations → ``Example``s, with the chat template of ``tokenizer``.

    ``tokenizer`` is a transformers tokenizer that knows ``<image>`` as the single token
    ``image_token_id``; each one is expanded to ``tokens_per_image`` copies, as transformers' LLaVA
    processor does. Longer than ``max_length``: whole trailing turns are dropped.
    """

    def __init__(self, tokenizer: Any, image_token_id: int, tokens_per_image: int,
                 max_length: int | None = None):
        found = tokenizer.encode(IMAGE_PLACEHOLDER, add_special_tokens=False)
        if found != [image_token_id]:
            raise ValueError(f"{IMAGE_PLACEHOLDER} tokenizes as {found}, not as the image token "
                             f"[{image_token_id}]: add it to the tokenizer as a special token")
        if tokens_per_image < 1:
            raise ValueError(f"tokens_per_image must be positive, got {tokens_per_image}")
        self.tokenizer = tokenizer
        self.image_token_id = image_token_id
        self.tokens_per_image = tokens_per_image
        self.max_length = max_length
        self._special = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        self.list_content = self._needs_list_content()
        self.end_of_turn_ids = self._probe_end_of_turn()
        self.pad_id = choose_pad_id(tokenizer, self.end_of_turn_ids, image_token_id)

    def render(self, conv: Conversation) -> Example:
        """Raises ``DataError`` (``too_long``, ``no_supervised``, ``image_count``) for a sample to
        drop, ``TemplateError`` for a template that is not prefix-stable."""
        last = max(i for i, m in enumerate(conv.messages) if m.role == "assistant")
        messages = [self._message(m.role, m.text) for m in conv.messages[:last + 1]]
        ids, spans, cuts = self._render_turns(messages)
        ids = np.asarray(ids, np.int32)
        is_image = ids == self.image_token_id
        placeholders = sum(m.text.count(IMAGE_PLACEHOLDER) for m in conv.messages[:last + 1])
        if is_image.sum() != placeholders:
            raise DataError(ErrorKind.IMAGE_COUNT, f"the chat template rendered {is_image.sum()} "
                            f"image tokens for {placeholders} placeholders", record_id=conv.id)
        supervised = np.zeros(len(ids), bool)
        for start, end in spans:
            supervised[start:end] = True
        supervised &= ~is_image

        cut = self._cut(cuts, np.cumsum(np.where(is_image, self.tokens_per_image, 1)),
                        np.cumsum(supervised), conv.id)
        repeats = np.where(is_image[:cut], self.tokens_per_image, 1)
        ids = np.repeat(ids[:cut], repeats)
        supervised = np.repeat(supervised[:cut], repeats)
        return Example(
            input_ids=ids,
            targets=np.append(ids[1:], self.pad_id).astype(np.int32),
            loss_mask=np.append(supervised[1:], False).astype(np.int32),
            num_images=int(is_image[:cut].sum()),
            language=conv.lang)

    def _cut(self, cuts: list[int], expanded_lengths: np.ndarray, supervised_counts: np.ndarray,
             record_id: str) -> int:
        """The longest prefix ending at a turn boundary that fits and has a supervised token
        (the two arrays are cumulative over the unexpanded ids)."""
        candidates = [c for c in cuts if supervised_counts[c - 1] > 0]
        if not candidates:
            raise DataError(ErrorKind.NO_SUPERVISED, "no token would carry loss",
                            record_id=record_id)
        fitting = [c for c in candidates if self.max_length is None
                   or expanded_lengths[c - 1] <= self.max_length]
        if not fitting:
            raise DataError(ErrorKind.TOO_LONG, f"even the first turn takes "
                            f"{expanded_lengths[candidates[0] - 1]} tokens, more than max_length "
                            f"{self.max_length}", record_id=record_id)
        return fitting[-1]

    def _render_turns(self, messages: list[dict]) -> tuple[list[int], list[tuple[int, int]],
                                                            list[int]]:
        """The ids, the supervised ``(start, end)`` of each assistant message, and the ends of the
        turns (after an assistant message that the next message does not continue)."""
        ids: list[int] = []
        spans, cuts = [], []
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = self._ids(messages[:k], generation_prompt=True)
            through = self._ids(messages[:k + 1], generation_prompt=False)
            self._check_prefix(ids, before, f"messages[:{k}] with the generation prompt")
            self._check_prefix(before, through, f"messages[:{k + 1}]")
            turn = through[len(before):]
            spans.append((len(before), len(before) + self._supervised_length(turn)))
            if k + 1 == len(messages) or messages[k + 1]["role"] != "assistant":
                cuts.append(len(through))
            ids = through
        return ids, spans, cuts

    def _supervised_length(self, turn: list[int]) -> int:
        """Through the turn's last special token (its end of turn); all of it if it has none."""
        ends = [i for i, t in enumerate(turn) if t in self._special]
        return ends[-1] + 1 if ends else len(turn)

    def _probe_end_of_turn(self) -> frozenset[int]:
        """The special tokens that close an assistant turn, from a probe conversation."""
        probe = [self._message("user", "Kaixo"), self._message("assistant", "Kaixo")]
        ids, [(start, end)], _ = self._render_turns(probe)
        closing = set()
        for token in reversed(ids[start:end]):
            if token not in self._special:
                break
            closing.add(token)
        return frozenset(closing)

    def _needs_list_content(self) -> bool:
        """Whether the template only renders list contents (LLaVA templates) and not strings."""
        text = "Kaixo " + IMAGE_PLACEHOLDER + "\nmundua"
        for list_content in (False, True):
            message = self._message("user", text, list_content)
            try:
                rendered = self.tokenizer.apply_chat_template([message], tokenize=False)
            except Exception:  # jinja raises all sorts on a content type it does not expect
                continue
            if "Kaixo" in rendered and "mundua" in rendered and "'type'" not in rendered:
                return list_content
        raise TemplateError("the chat template renders neither string nor list message contents")

    def _message(self, role: str, text: str, list_content: bool | None = None) -> dict:
        """A template message; as list content, ``<image>\\n`` becomes an image item."""
        if not (self.list_content if list_content is None else list_content):
            return {"role": role, "content": text}
        first, *rest = text.split(IMAGE_PLACEHOLDER)
        items = [{"type": "text", "text": first}] if first else []
        for piece in rest:
            items.append({"type": "image"})
            piece = piece.removeprefix("\n")
            items += [{"type": "text", "text": piece}] if piece else []
        return {"role": role, "content": items}

    def _ids(self, messages: list[dict], generation_prompt: bool) -> list[int]:
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=generation_prompt, tokenize=True,
            return_dict=True)["input_ids"]

    def _check_prefix(self, prefix: list[int], ids: list[int], what: str) -> None:
        if ids[:len(prefix)] != prefix:
            at = next((i for i, (a, b) in enumerate(zip(prefix, ids)) if a != b), len(ids))
            raise TemplateError(
                f"the chat template is not prefix-stable: rendering {what} changes token {at} "
                f"({self.tokenizer.decode(prefix[at:at + 8])!r} → "
                f"{self.tokenizer.decode(ids[at:at + 8])!r}); labels cannot be derived")


def choose_pad_id(tokenizer: Any, end_of_turn_ids: frozenset[int], image_token_id: int) -> int:
    """A pad token that is neither an end of turn nor the image token: the tokenizer's pad token,
    else ``<|finetune_right_pad_id|>`` (Llama-3.1), else the added special token of lowest id."""
    excluded = set(end_of_turn_ids) | {image_token_id}
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in excluded:
        return tokenizer.pad_token_id
    candidates = {t.content: i for i, t in tokenizer.added_tokens_decoder.items()
                  if t.special and i not in excluded}
    if FALLBACK_PAD in candidates:
        return candidates[FALLBACK_PAD]
    if candidates:
        return min(candidates.values())
    raise ValueError("no pad token: the pad token is an end of turn (or unset) and no other "
                     "special token is available")


def collate(examples: Sequence[Example], length: int, pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad to ``[B, length]``: ``input_ids``, ``targets`` (``pad_id`` on pads), ``loss_mask``
    and ``attention_mask`` (0 on pads), plus ``num_images`` ``[B]``."""
    batch = {name: np.full((len(examples), length), pad_id, np.int32)
             for name in ("input_ids", "targets")}
    batch |= {name: np.zeros((len(examples), length), np.int32)
              for name in ("loss_mask", "attention_mask")}
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        if n > length:
            raise ValueError(f"example {row} has {n} tokens, more than the batch length {length}")
        batch["input_ids"][row, :n] = ex.input_ids
        batch["targets"][row, :n] = ex.targets
        batch["loss_mask"][row, :n] = ex.loss_mask
        batch["attention_mask"][row, :n] = 1
    batch["num_images"] = np.asarray([ex.num_images for ex in examples], np.int32)
    return batch
