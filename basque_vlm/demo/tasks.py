"""The demo's evaluation tasks, registered like any user's (the ``basque_vlm.tasks`` entry point
in ``pyproject.toml``): ``demo_vqa_eu`` and ``demo_vqa_en``, the held-out questions of the
synthetic data (`synthetic`), generated on first use under `synthetic.default_root`.

The demo model is trained on bare questions: no instruction line, and the answer must match the
reference exactly (one capitalised word and a period).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from basque_vlm.data.conversation import IMAGE_PLACEHOLDER
from basque_vlm.eval import tasks


def heldout_folder(lang: str) -> Path:
    """The held-out ArrayRecord dataset of ``lang`` (the demo data made if it is missing)."""
    from basque_vlm.demo import synthetic  # its data code is slow to import: on first use

    return synthetic.ensure(synthetic.default_root()) / "datasets" / f"heldout_{lang}"


def load_heldout(task: tasks.Task, folder: Path) -> Iterator[tasks.Sample]:
    """Each record's user turn is the question, its assistant turn the answer."""
    from basque_vlm.data.sources import ConversationSource

    source = ConversationSource(folder)
    for i in range(len(source)):
        conv, images = source[i]
        user, answer = (next(m.text for m in conv.messages if m.role == role)
                        for role in ("user", "assistant"))
        yield tasks.Sample(id=conv.id, question=user.replace(IMAGE_PLACEHOLDER, "").strip(),
                           image=images[0], target=answer, where=f"{folder} record {i}")


tasks.register(*(
    tasks.Task(name=f"demo_vqa_{lang}", lang=lang, metric="accuracy", max_new_tokens=16,
               load=load_heldout, instruction=tasks.NO_INSTRUCTION, score=tasks.score_exact,
               data=lambda lang=lang: heldout_folder(lang))
    for lang in tasks.LANGS))
