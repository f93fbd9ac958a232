"""A model under test behind an OpenAI-compatible server (a commercial model, or any model served
by vLLM, SGLang, llama.cpp, ...), answering as ``runner.Generator`` does.

Each prompt goes as one user message, the image first (as a base64 PNG data URL) and then the
text, as LLaVA-style models are prompted; ``max_tokens`` is the task's answer length and the
temperature 0. A request that still fails after the client's retries answers
``runner.Unanswered``: an empty answer (scored as wrong) that the results count by kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from basque_vlm.eval.runner import Unanswered
from basque_vlm.runtime.openai_api import ChatClient, Failure, image_part, text_part


def user_message(prompt: str, image: Image.Image | None) -> dict[str, Any]:
    """The user message of one prompt: the image (if any), then the text."""
    parts = [] if image is None else [image_part(image)]
    return {"role": "user", "content": [*parts, text_part(prompt)]}


class ApiGenerator:
    """Answers of the ``client``'s model, with the call signature of ``runner.Generator``."""

    def __init__(self, client: ChatClient):
        self.client = client

    def __call__(self, prompts: Sequence[str], images: Sequence[Callable[[], Image.Image] | None],
                 max_new_tokens: int, progress: Callable[[int], None] | None = None
                 ) -> list[str]:
        """One answer per prompt (``images[i]`` loads prompt ``i``'s image; None: text only).
        Images are loaded as their requests go out."""
        conversations = ([user_message(p, None if im is None else im())]
                         for p, im in zip(prompts, images))
        replies = self.client.complete_all(conversations, progress, max_tokens=max_new_tokens,
                                           temperature=0)
        return [Unanswered(r.kind, str(r)) if isinstance(r, Failure) else r for r in replies]
