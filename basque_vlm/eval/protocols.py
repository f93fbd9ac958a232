"""How open-ended tasks (WildVision) are answered and judged: a protocol sets the answer budget,
how the judge is asked, and how its verdicts are aggregated.

- ``lmms`` (the default): lmms-eval's ``wild_vision_bench`` (`wildvision_lmms`): answers of up to
  4,096 new tokens, one judgement per sample with the reference as A, lmms-eval's aggregate. The
  numbers compare with published lmms-eval results, which is what the evaluation is for.
- ``both_orders`` (`judge.judge_pairs`): answers of the task's own length (1,024 new tokens),
  every sample judged in both orders so that a judge's preference for a position cancels out;
  more robust, but its numbers compare only with runs of the same protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from basque_vlm.eval import judge, wildvision_lmms


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A way of answering and judging open-ended tasks."""

    name: str
    # the answer length of the model under test; None: the task's own
    answer_tokens: int | None
    # (judge, questions, images, the model's answers, the reference answers) → one record each
    judge: Callable[[judge.Judge, Sequence[str], Sequence[Callable[[], Image.Image] | None],
                     Sequence[str], Sequence[str]], list[dict[str, Any]]]
    # every sample's record → the task's results
    summarize: Callable[[Sequence[dict[str, Any]]], dict[str, Any]]


PROTOCOLS = {
    "lmms": Protocol("lmms", wildvision_lmms.ANSWER_TOKENS, wildvision_lmms.judge_samples,
                     wildvision_lmms.summarize),
    "both_orders": Protocol("both_orders", None, judge.judge_pairs, judge.summarize),
}
DEFAULT = "lmms"
