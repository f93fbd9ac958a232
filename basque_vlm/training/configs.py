"""The pieces the experiment configs (``configs/*.py``) are built from: the optimizer, the loop
settings, scheduled evaluation, the mesh, and the paper's two-stage recipe.

    from basque_vlm.training import configs
    config.optim = configs.optim(connector=1e-3)
    config.train = configs.train(num_steps=1500, checkpoint_every=500)
"""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder


def optim(*, connector: float | None = None, language_model: float | None = None,
          vision_tower: float | None = None, warmup_ratio: float = 0.03,
          weight_decay: float = 0.0, grad_clip: float = 1.0) -> ml_collections.ConfigDict:
    """AdamW with a cosine schedule after a linear warmup (a share of ``train.num_steps``), one
    peak learning rate per part; a part without one (None) is frozen."""
    return ml_collections.ConfigDict(dict(
        learning_rates={part: lr if lr is not None else placeholder(float) for part, lr in
                        (("vision_tower", vision_tower), ("connector", connector),
                         ("language_model", language_model))},
        warmup_ratio=warmup_ratio, weight_decay=weight_decay, grad_clip=grad_clip,
        b1=0.9, b2=0.999, eps=1e-8))


# ``train`` settings a config may leave out, and their values then.
TRAIN_DEFAULTS = dict(log_every=10, checkpoint_every=500, keep_checkpoints=3, microbatches=1,
                      seed=0)


def train(*, num_steps: int, **settings: int) -> ml_collections.ConfigDict:
    """``num_steps`` optimizer steps; a checkpoint every ``checkpoint_every`` steps and at the
    end, the newest ``keep_checkpoints`` kept; the rest of ``TRAIN_DEFAULTS`` as given.
    ``peak_flops_per_device`` (FLOP/s) sets the MFU's denominator where the device table has
    none (CPU)."""
    unknown = set(settings) - set(TRAIN_DEFAULTS)
    if unknown:
        raise TypeError(f"train() got unknown settings {sorted(unknown)}")
    return ml_collections.ConfigDict(dict(
        num_steps=num_steps, **{**TRAIN_DEFAULTS, **settings},
        peak_flops_per_device=placeholder(float)))


def train_setting(config: Any, key: str) -> int:
    """``config.train.KEY``, or its default (`TRAIN_DEFAULTS`) when the config has none."""
    return int(config["train"].get(key, TRAIN_DEFAULTS[key]))


def evaluation(*, tasks: str = "", every: int | None = None, limit: int | None = 200,
               batch_size: int = 16) -> ml_collections.ConfigDict:
    """Evaluation during training (`basque_vlm.training.evaluation`): the comma-separated
    ``tasks`` (`basque_vlm.eval.tasks`; empty: none) every ``every`` steps (None: every
    ``train.checkpoint_every``; 0: only at the end) and at the end, on the first ``limit``
    samples of each, ``batch_size`` prompts at a time per process; scores to metrics.jsonl and
    TensorBoard (``eval/<task>``). ``data_dir`` as ``evaluate --data_dir``; ``param_dtype``
    casts the evaluated copy of the weights."""
    return ml_collections.ConfigDict(dict(
        tasks=tasks, every=every if every is not None else placeholder(int),
        limit=limit if limit is not None else placeholder(int),
        batch_size=batch_size, data_dir=placeholder(str), prompt_lang="auto",
        max_new_tokens=placeholder(int), param_dtype=placeholder(str)))


def mesh(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
    """``data × fsdp × tensor`` devices; −1 fills with the remaining ones."""
    return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


# The paper's runs: where the converted checkpoints, prepared data and workdirs live. Edit, or
# override --config.init_checkpoint / --config.data.root.
PAPER_ROOT = "/data/basque_vlm"
STAGES = ("align", "instruct")
# One epoch = ceil(samples / global batch) steps; set these to the `written` counts of your
# prepared data (`prepare_data`).
ALIGN_SAMPLES = 595_375      # LLaVA-CC3M-Pretrain-595K, the captions LLaVA-1.5 aligns on
INSTRUCT_SAMPLES = 300_000   # placeholder: PixMo-AMA + PixMo-CapQA (en+eu) + text-only


def paper(stage: str, name: str, converted: str) -> ml_collections.ConfigDict:
    """One stage of the paper's recipe (LLaVA-1.5's, as the paper and Pangea use it) for the
    backbone ``name``, whose converted checkpoint (CLIP ViT-L/14-336 + connector + LLM,
    `convert`) is ``converted``:

    - ``align``: the connector only, LR 1e-3, global batch 256, CC3M captions in English and
      Basque (the paper's translation); from the converted checkpoint.
    - ``instruct``: connector + LLM at LR 2e-5, the vision tower frozen (tune it with
      ``--config.optim.learning_rates.vision_tower=2e-6``), global batch 128, PixMo
      AskModelAnything and CapQA in English and Basque plus text-only instructions; from the
      ``align`` workdir.

    Both: AdamW, weight decay 0, cosine after a 3% warmup, one epoch, max length 2048, bf16
    compute with float32 master weights, the weights sharded over all devices (FSDP).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r} "
                         f"(configs/{name}.py:align or :instruct)")
    align = stage == "align"
    config = ml_collections.ConfigDict()
    config.stage = stage
    config.init_checkpoint = converted if align else f"{PAPER_ROOT}/workdirs/{name}_align"
    # logits_chunk: the loss computes the 128k-vocabulary logits 256 positions of each row at
    # a time, never all 2,048 (README, "Will it fit?").
    config.compute = dict(dtype="bfloat16", scan_layers=True, remat="full", attention="auto",
                          logits_chunk=256)

    batch = 256 if align else 128
    if align:
        sources = dict(cc3m_en=dict(path="cc3m_en", kind="caption"),
                       cc3m_eu=dict(path="cc3m_eu", kind="caption"))
    else:
        sources = dict(
            pixmo_ama_en=dict(path="pixmo_ama_en", kind="multimodal"),
            pixmo_ama_eu=dict(path="pixmo_ama_eu", kind="multimodal"),
            pixmo_capqa_en=dict(path="pixmo_capqa_en", kind="multimodal"),
            pixmo_capqa_eu=dict(path="pixmo_capqa_eu", kind="multimodal"),
            text_en=dict(path="text_instructions_en", kind="text_only"),
            text_eu=dict(path="text_instructions_eu", kind="text_only"))
    config.data = dict(
        root=f"{PAPER_ROOT}/data",   # prepared datasets (`prepare_data`), paths relative to it
        tokenizer=config.get_ref("init_checkpoint"),  # its tokenizer, template and processor
        tokens_per_image=576,        # CLIP ViT-L/14-336, class token dropped
        sources=sources,
        # The Basque share of the captions / multimodal instructions. The paper sweeps it from
        # 0 to 1 (configs/sweep_ratio.py) and finds ~20% enough for Basque; 0.2 is its pick.
        basque_ratio=0.2,
        caption_ratio=1.0 if align else 0.0,
        text_only_ratio=0.0 if align else 0.1,  # our default share of text-only instructions
        max_length=2048,
        length_buckets=(640, 768, 1024, 1536, 2048),
        max_images=1,
        global_batch_size=batch,
        seed=0,
        num_workers=8,
        num_threads=4,
        prefetch=4,
    )
    config.optim = (optim(connector=1e-3) if align else
                    optim(connector=2e-5, language_model=2e-5))
    samples = ALIGN_SAMPLES if align else INSTRUCT_SAMPLES
    config.train = train(num_steps=-(-samples // batch), log_every=10,
                         checkpoint_every=250 if align else 500)
    config.mesh = mesh(data=1, fsdp=-1, tensor=1)
    # None by default; e.g. --config.eval.tasks=vqav2_eu,vqav2_en --config.eval.data_dir=...
    config.eval = evaluation()
    return config
