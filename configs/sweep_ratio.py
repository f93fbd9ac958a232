"""The paper's experiment: the Basque share of the multimodal instruction data
(``data.basque_ratio``) swept from 0 to 1, for both backbones (instruct stage), one run per cell
(``python -m basque_vlm.sweep``; see the README's "The experiment: how much Basque?"):

    python -m basque_vlm.sweep plan --sweep=configs/sweep_ratio.py --root=DIR [--launch=print]
    python -m basque_vlm.sweep plan --sweep=configs/sweep_ratio.py --root=DIR \\
        --sweep.ratios=0,0.2,1 --sweep.backbones=latxa31_8b --sweep.eval_args=--limit=500
    python -m basque_vlm.sweep report --root=DIR --out=DIR/report

The ``demo`` variant runs the same experiment in miniature on the embedded demo model
(``configs/demo.py``, shortened), on CPU, in a few minutes:

    python -m basque_vlm.sweep run --sweep=configs/sweep_ratio.py:demo --root=workdir/sweep_demo

Keys:

- ``ratios``: the Basque shares (0..1), one cell each; ``--sweep.ratios=0,0.5,1``.
- ``backbones``: names from ``configs`` (or a config path, ``configs/X.py[:arg]``, named after the
  file); ``--sweep.backbones=llama31_8b,latxa31_8b``.
- ``configs``: each backbone's training config (the 8B ones at their ``instruct`` stage, which
  starts from the backbone's ``align`` workdir).
- ``train_args``: extra flags for every ``train`` command, e.g.
  ``"--config.train.num_steps=500 --config.mesh.fsdp=8"``.
- ``tasks``: the evaluation tasks (``basque_vlm.eval.tasks``); ``eval_args``: extra flags for
  every ``evaluate`` command (``--limit=500``; the WildVision judge:
  ``--judge_url=... --judge_model=...``).
- ``env``: environment variables for the commands, each one only where the user has not set it.
"""

import ml_collections

PAPER_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
# The instruct stage only: each cell sets its data.basque_ratio; align keeps its 0.8 (the cards).
CONFIGS = dict(llama31_8b="configs/llama31_8b.py:instruct",
               latxa31_8b="configs/latxa31_8b.py:instruct",
               demo="configs/demo.py")
# The closed-form benchmarks of the paper, Basque and English. Add wildvision_eu,wildvision_en
# with a judge in eval_args (README, "The judge").
PAPER_TASKS = ("vqav2_eu,vqav2_en,aokvqa_mc_eu,aokvqa_mc_en,aokvqa_da_en,"
               "pixmo_capqa_eu,pixmo_capqa_en")

# The miniature: the demo model for half its steps (750 instead of 1,500; ~2 minutes a cell with
# its evaluation on all 595 held-out questions per language), by which time it reads the images.
DEMO_STEPS = 750
DEMO_TRAIN_ARGS = (f"--config.train.num_steps={DEMO_STEPS} --config.train.log_every=50 "
                   f"--config.train.checkpoint_every={DEMO_STEPS}")


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
    if variant not in ("paper", "demo"):
        raise ValueError(f"variant must be paper or demo, got {variant!r} "
                         "(configs/sweep_ratio.py or configs/sweep_ratio.py:demo)")
    config = ml_collections.ConfigDict()
    config.configs = dict(CONFIGS)
    if variant == "paper":
        config.ratios = PAPER_RATIOS
        config.backbones = ("llama31_8b", "latxa31_8b")
        config.train_args = ""
        config.tasks = PAPER_TASKS
        config.eval_args = ""
        config.env = ml_collections.ConfigDict()
    else:
        config.ratios = (0.0, 0.2, 1.0)
        config.backbones = ("demo",)
        config.train_args = DEMO_TRAIN_ARGS
        config.tasks = "demo_vqa_eu,demo_vqa_en"
        config.eval_args = ""
        # Two CPU devices, as `make demo` (XLA runs the small ops on one core per device).
        config.env = ml_collections.ConfigDict(
            dict(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    return config
