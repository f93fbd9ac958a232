"""Latxa-Llama-3.1-8B-Instruct + CLIP ViT-L/14-336 + a linear connector: the paper's
Basque-adapted backbone (Arana et al., "Multimodal Large Language Models for Low-Resource
Languages: A Case Study for Basque"; same architecture and tokenizer as Llama-3.1, pad token
``<|end_of_text|>``), trained with its two-stage recipe (`basque_vlm.training.configs.paper`).
The stage is the config's argument (default ``align``):

    python -m basque_vlm.convert --llm_dir=Latxa-Llama-3.1-8B-Instruct \\
        --vision_dir=clip-vit-large-patch14-336 --projector=linear --out=$ROOT/ckpt/latxa31_8b
    python -m basque_vlm.train --config=configs/latxa31_8b.py:align \\
        --workdir=$ROOT/workdirs/latxa31_8b_align
    python -m basque_vlm.train --config=configs/latxa31_8b.py:instruct \\
        --workdir=$ROOT/workdirs/latxa31_8b_instruct

The connector is linear, as in the paper (LLaVA-1.5 and Pangea: ``mlp2x_gelu``). Every setting
and its source: `basque_vlm.training.configs.paper` (``data.basque_ratio``: 0.8 to align, 0.2 to
instruct).
"""

import ml_collections

from basque_vlm.training import configs

NAME = "latxa31_8b"


def get_config(stage: str = "align") -> ml_collections.ConfigDict:
    return configs.paper(stage, NAME, converted=f"{configs.PAPER_ROOT}/ckpt/{NAME}")
