"""An lmms-eval model backed by a checkpoint of ours, so that any lmms-eval task can run it.

lmms-eval is optional and not in the pinned requirements: ``pip install lmms-eval`` pulls its own
torch (and CUDA wheels), so install it in a separate environment beside this package. Then::

    from lmms_eval.evaluator import simple_evaluate
    from basque_vlm.eval.lmms_bridge import BasqueVLM

    results = simple_evaluate(model=BasqueVLM(pretrained="ckpt/latxa-clip", batch_size=16),
                              tasks=["vqav2_val"], limit=100)

Only ``generate_until`` is implemented (greedy, one image or none per request: what the
benchmarks of this project use); ``until`` strings cut the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from basque_vlm.eval.runner import Generator

try:
    from lmms_eval.api.model import lmms
except ImportError:  # optional dependency
    lmms = None


def answer_requests(generator: Any, requests: Sequence[Any], task_dict: dict) -> list[str]:
    """lmms-eval ``generate_until`` requests (``args``: context, generation kwargs,
    ``doc_to_visual``, doc id, task, split) → one answer each, in order."""
    by_length: dict[int, list[int]] = {}
    prompts, images, until = [], [], []
    for i, request in enumerate(requests):
        context, kwargs, doc_to_visual, doc_id, task, split = request.args
        if kwargs.get("do_sample") or kwargs.get("temperature", 0) > 0:
            raise ValueError("the basque_vlm lmms-eval model decodes greedily only")
        visuals = doc_to_visual(task_dict[task][split][doc_id]) if doc_to_visual else []
        if len(visuals) > 1:
            raise ValueError(f"{task} doc {doc_id}: {len(visuals)} images; one is supported")
        prompts.append(context)
        images.append((lambda im=visuals[0]: im.convert("RGB")) if visuals else None)
        stops = kwargs.get("until") or []
        until.append([stops] if isinstance(stops, str) else list(stops))
        by_length.setdefault(int(kwargs.get("max_new_tokens", 16)), []).append(i)
    answers = [""] * len(requests)
    for max_new_tokens, group in by_length.items():
        texts = generator([prompts[i] for i in group], [images[i] for i in group], max_new_tokens)
        for i, text in zip(group, texts):
            for stop in until[i]:
                text = text.split(stop)[0] if stop else text
            answers[i] = text
    return answers


if lmms is not None:
    class BasqueVLM(lmms):
        """``--model`` for lmms-eval: ``pretrained`` is a checkpoint or a training workdir."""

        def __init__(self, pretrained: str, batch_size: int | str = 16, **kwargs: Any):
            super().__init__()
            self.generator = Generator(pretrained, int(batch_size))

        def generate_until(self, requests: list) -> list[str]:
            return answer_requests(self.generator, requests, self.task_dict)

        def loglikelihood(self, requests: list) -> list:
            raise NotImplementedError("basque_vlm implements generate_until only")

        def generate_until_multi_round(self, requests: list) -> list[str]:
            raise NotImplementedError("basque_vlm implements generate_until only")


def __getattr__(name: str) -> Any:
    if name == "BasqueVLM":
        raise ImportError("BasqueVLM needs lmms-eval, which is not installed (pip install "
                          "lmms-eval, in its own environment: see this module's docstring)")
    raise AttributeError(name)
