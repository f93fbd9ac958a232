"""The training mixture: which source each position of the global sample stream draws from.

Prepared sources (``data.sources.NAME = {path, kind}``; the language comes from the dataset's
metadata) are grouped into leaves, weighted by the config:

- ``text_only``: text-only instructions, every language: ``data.text_only_ratio``;
- ``caption``: align-stage captions: ``data.caption_ratio``, split by ``data.basque_ratio``;
- ``multimodal``: instructions with images: the rest, split by ``data.basque_ratio``,
  Basque (``eu``) and English (``en``).

``data.basque_ratio`` is the share of the target language, ``data.target_lang`` (default ``eu``):
another low-resource language trains with ``--config.data.target_lang=gl`` on its own datasets.

Position ``k`` of the stream maps to ``(leaf, rank)`` by an exact low-discrepancy interleave
(nested Bresenham with rational weights): among any ``n`` consecutive positions a node's child of
share ``w`` gets ``floor(n w)`` or ``ceil(n w)`` of them. So the Basque share of any 2,000
consecutive multimodal samples is within 1/2,000 of ``data.basque_ratio``, and exactly none / all
at 0 / 1. Each leaf concatenates its sources, shuffled with a seed per leaf and epoch, repeated.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import zlib
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import grain
import numpy as np

from basque_vlm.data.conversation import Conversation
from basque_vlm.data.sources import ConversationSource, SourceInfo, source_info
from basque_vlm.runtime import paths

KINDS = ("multimodal", "text_only", "caption")
TARGET_LANG = "eu"  # data.target_lang's default: the language data.basque_ratio is the share of
RATIOS = ("basque_ratio", "text_only_ratio", "caption_ratio")

# A tree of weighted children; a leaf is an index into the list of leaves.
Tree = tuple[tuple[Fraction, "Tree | int"], ...]


@dataclasses.dataclass(frozen=True)
class Leaf:
    kind: str
    lang: str | None  # None: all languages (text_only)
    sources: tuple[SourceInfo, ...]


@dataclasses.dataclass(frozen=True)
class Record:
    """One element of the mixed stream."""

    source: str
    kind: str
    conversation: Conversation
    images: list[bytes]


@dataclasses.dataclass(frozen=True)
class Plan:
    leaves: tuple[Leaf, ...]
    tree: Tree
    source_kinds: dict[str, str]  # every configured source → its kind


def plan(data: Mapping[str, Any]) -> Plan:
    """Reads ``data.sources`` (metadata only) and the ratios; raises ValueError naming the config
    key for a ratio outside [0, 1], a missing or empty source, or a share with no source."""
    ratios = {key: _ratio(data, key) for key in RATIOS}
    if ratios["text_only_ratio"] + ratios["caption_ratio"] > 1:
        raise ValueError("data.text_only_ratio + data.caption_ratio must be at most 1, got "
                         f"{ratios['text_only_ratio']} + {ratios['caption_ratio']}")
    target = str(data.get("target_lang", TARGET_LANG))
    infos = _source_infos(data, (target, "en"))
    basque = ratios["basque_ratio"]
    shares = {"text_only": ratios["text_only_ratio"], "caption": ratios["caption_ratio"]}
    shares["multimodal"] = 1 - shares["text_only"] - shares["caption"]
    leaves: list[Leaf] = []
    top = []
    for kind in KINDS:
        if shares[kind] == 0:
            continue
        of_kind = [(info, k) for info, k in infos if k == kind]
        if kind == "text_only":
            top.append((shares[kind], _leaf(leaves, Leaf(kind, None, _need(of_kind, kind)))))
            continue
        children = []
        for lang, weight in ((target, basque), ("en", 1 - basque)):
            if weight:
                of_lang = [(i, k) for i, k in of_kind if i.lang == lang]
                children.append((weight, _leaf(leaves, Leaf(kind, lang,
                                                            _need(of_lang, kind, lang)))))
        top.append((shares[kind], tuple(children)))
    return Plan(tuple(leaves), tuple(top), {info.name: kind for info, kind in infos})


def dataset(plan_: Plan, seed: int) -> grain.MapDataset:
    """The infinite stream of ``Record``s: element ``k`` is position ``k`` of the mixture."""
    leaves = [_leaf_dataset(leaf, _leaf_seed(seed, leaf)) for leaf in plan_.leaves]
    return grain.MapDataset.select_from_datasets(leaves, Interleave(plan_.tree))


class Interleave(grain.transforms.DatasetSelectionMap):
    """Position → (leaf, rank in that leaf): nested Bresenham over the weight tree."""

    def __init__(self, tree: Tree):
        self.tree = tree

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, index: int) -> tuple[int, int]:
        node, rank = self.tree, index
        while not isinstance(node, int):
            node, rank = _pick(node, rank)
        return node, rank


def _pick(children: Tree, index: int) -> tuple[Tree | int, int]:
    """The child that position ``index`` of this node's stream goes to, and its rank there. Child
    ``i`` takes share ``w_i / (w_i + ... + w_last)`` of what the children before it leave."""
    remaining = sum(w for w, _ in children)
    for weight, child in children[:-1]:
        share = weight / remaining
        before = index * share.numerator // share.denominator
        if (index + 1) * share.numerator // share.denominator > before:
            return child, before
        index -= before
        remaining -= weight
    return children[-1][1], index


class _Tag(grain.transforms.Map):
    def __init__(self, source: str, kind: str):
        self.source, self.kind = source, kind

    def map(self, element: tuple[Conversation, list[bytes]]) -> Record:
        return Record(self.source, self.kind, *element)


def _leaf_dataset(leaf: Leaf, seed: int) -> grain.MapDataset:
    parts = [grain.MapDataset.source(ConversationSource(info.path)).map(_Tag(info.name, leaf.kind))
             for info in leaf.sources]
    joined = parts[0] if len(parts) == 1 else grain.MapDataset.concatenate(parts)
    return joined.shuffle(seed=seed).repeat()


def _leaf_seed(seed: int, leaf: Leaf) -> int:
    """Stable per leaf (not per position in the plan), so changing one ratio to or from 0 leaves
    the other leaves' orders as they were."""
    key = zlib.crc32(f"{leaf.kind}/{leaf.lang}".encode())
    return int(np.random.SeedSequence([seed, key]).generate_state(1)[0])


def _leaf(leaves: list[Leaf], leaf: Leaf) -> int:
    leaves.append(leaf)
    return len(leaves) - 1


def _need(found: Sequence[tuple[SourceInfo, str]], kind: str, lang: str | None = None
          ) -> tuple[SourceInfo, ...]:
    if found:
        return tuple(info for info, _ in found)
    key = {"text_only": "data.text_only_ratio", "caption": "data.caption_ratio",
           "multimodal": "data.basque_ratio"}[kind]
    wanted, where = ("", "") if lang is None else (f" in {lang!r}", f" with lang {lang!r}")
    raise ValueError(f"{key} asks for {kind} samples{wanted}, but data.sources has no {kind} "
                     f"source{where}")


def _ratio(data: Mapping[str, Any], key: str) -> Fraction:
    value = data.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"data.{key} must be a number in [0, 1], got {value!r}")
    return Fraction(value).limit_denominator(1_000_000)


def _source_infos(data: Mapping[str, Any], langs: tuple[str, str]
                  ) -> list[tuple[SourceInfo, str]]:
    configured = data.get("sources") or {}
    if not configured:
        raise ValueError("data.sources is empty: configure at least one prepared dataset")
    infos = []
    for name, source in configured.items():
        key = f"data.sources.{name}"
        kind = source.get("kind", "multimodal")
        if kind not in KINDS:
            raise ValueError(f"{key}.kind must be one of {KINDS}, got {kind!r}")
        if not source.get("path"):
            raise ValueError(f"{key}.path is not set")
        path = resolve(data, source["path"])
        try:
            info = source_info(path, name)
        except ValueError as e:
            raise ValueError(f"{key}.path: {e}") from e
        if kind != "text_only" and info.lang not in langs:
            raise ValueError(f"{key}: lang {info.lang!r}; the {kind} mixture takes {langs} "
                             "(data.target_lang and English)")
        infos.append((info, kind))
    return infos


def resolve(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``path`` relative to ``data.root`` when it is relative and a root is set. A URL
    (``gs://...``) is returned as it is, as an ``etils.epath.Path``: the tokenizer folder may be
    a remote checkpoint or workdir (`basque_vlm.paths`); the datasets themselves are local."""
    if paths.scheme(path):
        return paths.path(path)
    root = data.get("root")
    return Path(root, path) if root and not Path(path).is_absolute() else Path(path)
