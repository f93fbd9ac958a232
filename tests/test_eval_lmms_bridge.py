"""The lmms-eval adapter's request handling (lmms-eval itself is optional and not installed by
the project: its class is checked only where lmms-eval imports)."""

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from basque_vlm.eval import lmms_bridge


class Echo:
    """Answers ``"<prompt> | <max_new_tokens> | <has image>"``."""

    def __call__(self, prompts, images, max_new_tokens, progress=None):
        return [f"{p} | {max_new_tokens} | {load is not None and load().mode == 'RGB'}"
                for p, load in zip(prompts, images)]


def request(context, kwargs, doc_id, visual=True):
    to_visual = (lambda doc: [doc["image"]]) if visual else None
    return SimpleNamespace(args=(context, kwargs, to_visual, doc_id, "vqav2_val", "validation"))


def test_requests_become_answers_in_order():
    image = Image.fromarray(np.zeros((4, 4), np.uint8))  # greyscale: converted to RGB
    docs = {"vqav2_val": {"validation": [{"image": image}, {"image": image}]}}
    requests = [request("Q0", {"max_new_tokens": 16, "until": ["\n\n"]}, 0),
                request("Q1", {"max_new_tokens": 4, "until": " | 4"}, 1),
                request("Q2", {"until": []}, 0, visual=False)]
    answers = lmms_bridge.answer_requests(Echo(), requests, docs)
    assert answers == ["Q0 | 16 | True", "Q1", "Q2 | 16 | False"]


def test_sampling_is_refused():
    with pytest.raises(ValueError, match="greedily"):
        lmms_bridge.answer_requests(Echo(), [request("Q", {"temperature": 0.7}, 0)], {})


@pytest.mark.skipif(importlib.util.find_spec("lmms_eval") is not None,
                    reason="lmms-eval is installed here")
def test_model_class_needs_lmms_eval():
    with pytest.raises(ImportError, match="lmms-eval"):
        lmms_bridge.BasqueVLM  # noqa: B018
