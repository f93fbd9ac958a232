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
        # torch's AdamW defaults, which the Hugging Face Trainer of LLaVA-1.5 and Pangea keeps
        b1=0.9, b2=0.999, eps=1e-8))


# ``train`` settings a config may leave out, and their values then.
TRAIN_DEFAULTS = dict(log_every=10, checkpoint_every=500, keep_checkpoints=3, microbatches=1,
                      seed=0)


def train(*, num_steps: int, checkpoint_every_minutes: float | None = None,
          **settings: int) -> ml_collections.ConfigDict:
    """``num_steps`` optimizer steps; a checkpoint every ``checkpoint_every`` steps and at the
    end, the newest ``keep_checkpoints`` kept; the rest of ``TRAIN_DEFAULTS`` as given.
    ``checkpoint_every_minutes`` (None: off) also saves once that much wall time has passed
    since the last save, so that a preemption without warning loses at most that much (e.g. 30
    on Spot). ``peak_flops_per_device`` (FLOP/s) sets the MFU's denominator where the device
    table has none (CPU)."""
    unknown = set(settings) - set(TRAIN_DEFAULTS)
    if unknown:
        raise TypeError(f"train() got unknown settings {sorted(unknown)}")
    minutes = placeholder(float) if checkpoint_every_minutes is None else \
        float(checkpoint_every_minutes)
    return ml_collections.ConfigDict(dict(
        num_steps=num_steps, **{**TRAIN_DEFAULTS, **settings},
        checkpoint_every_minutes=minutes, peak_flops_per_device=placeholder(float)))


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
# One epoch = ceil(samples / global batch) steps. Both are defaults: set them to the `written`
# counts `prepare_data` reports for your data. English and Basque sets are translations of each
# other, so an epoch is one language's worth of samples, drawn in both at `data.basque_ratio`.
# align: the paper aligns on CC3M and its Basque translation without giving the count; 595,375
# is LLaVA's filtered CC3M subset (LLaVA-CC3M-Pretrain-595K), the usual CC3M-based LLaVA
# alignment set. LLaVA-1.5 itself aligns on LCS-558K.
ALIGN_SAMPLES = 595_375
# instruct: the ~146k rows of lukasArana/pixmo-ask-model-anything-eu; add your PixMo-CapQA and
# text-only counts.
INSTRUCT_SAMPLES = 146_000


def paper(stage: str, name: str, converted: str) -> ml_collections.ConfigDict:
    """One stage of the paper's recipe (LLaVA-1.5's, as the paper and Pangea use it) for the
    backbone ``name``, whose converted checkpoint (CLIP ViT-L/14-336 + connector + LLM,
    `convert`) is ``converted``:

    - ``align``: the connector only, on CC3M captions, 80% Basque / 20% English; from the
      converted checkpoint.
    - ``instruct``: connector + LLM, the vision tower frozen, on PixMo AskModelAnything and
      CapQA plus text-only instructions, 20% Basque (the swept value); from the ``align``
      workdir.

    Each setting below carries its source (the paper, the released models' cards, LLaVA-1.5,
    Pangea) or, marked "ours", the reason for it.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r} "
                         f"(configs/{name}.py:align or :instruct)")
    align = stage == "align"
    batch = 256 if align else 128  # LLaVA-1.5's global batches (Pangea: 512)
    samples = ALIGN_SAMPLES if align else INSTRUCT_SAMPLES
    config = ml_collections.ConfigDict()
    config.stage = stage
    # LLaVA-1.5: align from the pretrained parts, instruct from the aligned model
    config.init_checkpoint = converted if align else f"{PAPER_ROOT}/workdirs/{name}_align"
    config.compute = dict(
        dtype="bfloat16",   # LLaVA-1.5 and Pangea train in bf16 (float32 master weights here)
        scan_layers=True,   # ours: one compiled layer for all 32, the same numbers
        remat="full",       # ours: activations recomputed in the backward pass, to fit 8B
        attention="auto",   # ours: splash on TPU, cuDNN on GPU (README, "Attention kernels")
        logits_chunk=256)   # ours: 128k-vocabulary logits 256 positions at a time ("Will it fit?")
    config.data = dict(
        root=f"{PAPER_ROOT}/data",  # ours: the prepared datasets, paths below relative to it
        tokenizer=config.get_ref("init_checkpoint"),  # the backbone's tokenizer and template
        tokens_per_image=576,       # CLIP ViT-L/14-336: (336/14)² patches, class token dropped
        sources=_sources(align),
        # the cards: align on 80% Basque captions; the paper sweeps instruct's share, picks 0.2
        basque_ratio=0.8 if align else 0.2,
        caption_ratio=1.0 if align else 0.0,  # the paper: captions align, instructions tune
        text_only_ratio=0.0 if align else 0.1,  # ours: the paper adds text-only data, no share
        max_length=2048,            # LLaVA-1.5 (Pangea: 8192); longer samples truncate or drop
        length_buckets=(640, 768, 1024, 1536, 2048),  # ours: padded lengths, one compile each
        max_images=1,               # the paper's data: one image per sample
        global_batch_size=batch,
        seed=0,                     # ours
        num_workers=8,              # ours: Grain workers per host, for a TPU VM's CPUs
        num_threads=4,              # ours
        prefetch=4,                 # ours
    )
    config.optim = optim(           # AdamW, cosine after a linear warmup: LLaVA-1.5, Pangea
        connector=1e-3 if align else 2e-5,          # LLaVA-1.5, Pangea
        language_model=None if align else 2e-5,     # LLaVA-1.5: frozen to align, 2e-5 to tune
        vision_tower=None,          # frozen: LLaVA-1.5, the cards (Pangea: 2e-6, see README)
        warmup_ratio=0.03,          # LLaVA-1.5, Pangea
        weight_decay=0.0,           # LLaVA-1.5, Pangea
        grad_clip=1.0)              # the Hugging Face Trainer's default, kept by LLaVA-1.5
    config.train = train(
        num_steps=-(-samples // batch),  # one epoch: LLaVA-1.5, Pangea
        log_every=10,                    # ours
        checkpoint_every=250 if align else 500)  # ours: at most ~an hour lost to a preemption
    # ours: weights and optimizer state sharded over every device (LLaVA-1.5 tunes with ZeRO-3)
    config.mesh = mesh(data=1, fsdp=-1, tensor=1)
    # none by default; e.g. --config.eval.tasks=vqav2_eu,vqav2_en --config.eval.data_dir=...
    config.eval = evaluation()
    return config


def _sources(align: bool) -> dict[str, dict[str, str]]:
    """The stage's prepared datasets (`prepare_data --out=DATA_ROOT/PATH`)."""
    if align:  # the paper: CC3M and its Basque translation
        return dict(cc3m_en=dict(path="cc3m_en", kind="caption"),
                    cc3m_eu=dict(path="cc3m_eu", kind="caption"))
    # the paper: PixMo AskModelAnything and CapQA in both languages, text-only instructions
    return dict(
        pixmo_ama_en=dict(path="pixmo_ama_en", kind="multimodal"),
        pixmo_ama_eu=dict(path="pixmo_ama_eu", kind="multimodal"),
        pixmo_capqa_en=dict(path="pixmo_capqa_en", kind="multimodal"),
        pixmo_capqa_eu=dict(path="pixmo_capqa_eu", kind="multimodal"),
        text_en=dict(path="text_instructions_en", kind="text_only"),
        text_eu=dict(path="text_instructions_eu", kind="text_only"))
