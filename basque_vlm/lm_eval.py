"""lm-evaluation-harness's command line, with this project's checkpoints as its model
``basque_vlm`` (`basque_vlm.eval.lm_eval_model`): the text-only ability of a VLM's language model.

    python -m basque_vlm.lm_eval --model basque_vlm --model_args checkpoint=CKPT \\
        --tasks xnli_eu,xnli_en --batch_size 16 [--include_path DIR] [--output_path DIR]
    python -m basque_vlm.lm_eval ls tasks

Every argument is lm-eval's own (``--help``). lm-eval (0.4) finds a model only in its own
registry, which no installed package can add to, so its ``lm_eval`` command does not know
``basque_vlm``: this is that command with the model registered first. It parses its own
arguments, so this tool is not an absl app. It runs as one process; on several hosts (a TPU pod
slice), run ``evaluate --tasks=lm_eval:...`` on every one instead.
"""

from __future__ import annotations

import importlib.util

from basque_vlm.runtime import cli


def _run() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        raise ValueError("needs lm-evaluation-harness: pip install -e '.[lm_eval]'")
    from lm_eval.__main__ import cli_evaluate

    import basque_vlm.eval.lm_eval_model  # noqa: F401  (registers the model)

    cli.quiet_libraries()
    cli_evaluate()


if __name__ == "__main__":
    cli.run("lm_eval", _run)
