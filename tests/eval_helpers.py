"""Shared by the evaluation tests: a scripted stand-in for the model, and one task loaded,
answered and summarised through the runner as `evaluate` does."""

from __future__ import annotations

from PIL import Image

from basque_vlm.eval import runner, tasks


class Scripted:
    """A stand-in for ``runner.Generator``: answer ``i`` is ``answers[i]``; images are loaded."""

    def __init__(self, answers):
        self.answers = answers
        self.prompts = []

    def __call__(self, prompts, images, max_new_tokens, progress=None):
        assert all(isinstance(load(), Image.Image) for load in images if load is not None)
        self.prompts += prompts
        return [self.answers[i] for i in range(len(prompts))]


def evaluate(name_or_task, data_dir, answers, limit=None, prompt_lang=None):
    """``(result, records, scripted)`` of a task (a name or a ``Task``) on ``data_dir``;
    ``answers`` is a list, or a function of the samples giving one."""
    task = (tasks.TASKS[name_or_task] if isinstance(name_or_task, str) else name_or_task)
    samples, skipped = runner.load_samples(task, data_dir, limit)
    scripted = Scripted(answers(samples) if callable(answers) else answers)
    records = runner.gather(runner.answer(task, samples, scripted, prompt_lang or task.lang))
    return runner.summarize(task, records, skipped, prompt_lang or task.lang), records, scripted
