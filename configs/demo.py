"""The embedded demo: a tiny LLaVA-style model trained from scratch — vision tower, connector and
language model, all parameters, in one run — on CPU, on the synthetic bilingual scenes
(``basque_vlm.demo.synthetic``: colour, shape, count, yes/no and position questions in Basque and
English, plus captions of the training scenes), generated under ``data.root`` (by default
``~/.cache/basque_vlm/demo_data``; ``$BASQUE_VLM_DEMO_DATA`` moves it) on first use.

It reproduces the pipeline of the paper (the chat template, the Basque/English mixture, loss on
the answers only, AdamW + warmup + cosine) at a size that trains in a few minutes on two cores,
and learns to answer the held-out questions (``demo_vqa_eu``, ``demo_vqa_en``).

    python -m basque_vlm.train --config=configs/demo.py --workdir=workdir/demo
    python -m basque_vlm.data_stats --config=configs/demo.py --config.data.basque_ratio=0.2

Every sharded size (batch, heads, kv heads, MLP, vocabulary, hidden) divides over a
``data=2, fsdp=2, tensor=2`` mesh (``--config.mesh.data=2 --config.mesh.fsdp=2
--config.mesh.tensor=2`` on 8 devices).

How each setting was chosen (the tuning runs): docs/demo_recipe.md.
"""

import ml_collections

from basque_vlm.demo import synthetic
from basque_vlm.training import configs

IMAGE_SIZE = 48  # synthetic.IMAGE_SIZE: a 3 × 3 grid of 16-pixel cells
PATCH_SIZE = 16  # synthetic.CELL: one patch per cell, so each shape is one whole image token


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # The demo tokenizer's specials (synthetic.SPECIAL_TOKENS): <|pad|>=0, <|im_start|>=1,
    # <|im_end|>=2, <image>=3; its vocabulary is at most 512.
    config.model = dict(
        text=dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=32, rope_theta=10000.0,
                  max_position_embeddings=256, tie_word_embeddings=False),
        vision=dict(kind="clip", hidden_size=128, intermediate_size=256, num_layers=2,
                    num_heads=4, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        connector="mlp2x_gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_token_id=3,
        pad_token_id=0,
        eos_token_ids=(2,),
    )
    # How to compute (not stored with the weights): float32, layers unrolled (faster on CPU), the
    # loss over all positions at once (a 512-entry vocabulary: nothing to save by chunking).
    config.compute = dict(dtype="float32", scan_layers=False, remat="none", attention="auto",
                          logits_chunk=0)

    config.data = dict(
        root=str(synthetic.default_root()),  # relative paths below are under it
        builder="basque_vlm.demo.synthetic:ensure",  # generates the data under root on first use
        tokenizer="tokenizer",      # tokenizer + chat template + preprocessor_config.json
        tokens_per_image=(IMAGE_SIZE // PATCH_SIZE) ** 2,  # CLIP, class token dropped
        sources=dict(
            demo_vqa_eu=dict(path="datasets/train_eu", kind="multimodal"),
            demo_vqa_en=dict(path="datasets/train_en", kind="multimodal"),
            demo_caption_eu=dict(path="datasets/train_caption_eu", kind="caption"),
            demo_caption_en=dict(path="datasets/train_caption_en", kind="caption"),
        ),
        basque_ratio=0.5,
        text_only_ratio=0.0,
        caption_ratio=0.25,         # the captions' share: they teach reading the image by place
        max_length=64,
        length_buckets=(32, 40, 50),  # questions: 28-32 tokens; captions: 30-49
        max_images=1,
        global_batch_size=64,       # 32 stalls at ~0.6 (docs/demo_recipe.md)
        seed=0,
        num_workers=0,              # Grain worker processes
        num_threads=2,
        prefetch=2,
    )

    # Everything trains (from scratch), at one learning rate (docs/demo_recipe.md: at batch
    # 32, 1e-3 stalls this tiny model at the answers' priors; at 64 it does not). Captions are
    # learnt by step ~400; the questions reach ~0.8 by step ~1,000 and 0.84-0.95 by 1,500.
    config.optim = configs.optim(vision_tower=1e-3, connector=1e-3, language_model=1e-3,
                                 warmup_ratio=0.03)
    config.train = configs.train(num_steps=1500, log_every=100, checkpoint_every=500)
    config.mesh = configs.mesh(data=-1)
    # The held-out questions (100 per language, the demo data's own split) every 1,000 steps
    # and at the end: a few seconds each time. --config.eval.tasks= turns it off.
    config.eval = configs.evaluation(tasks="demo_vqa_eu,demo_vqa_en", every=1000, limit=100,
                                     batch_size=32)
    return config
