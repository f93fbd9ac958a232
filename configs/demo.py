"""The embedded demo: a tiny LLaVA-style model trained from scratch, on CPU, on the synthetic
bilingual scenes (``basque_vlm.data.synthetic``), generated under ``data.root`` (the repository's
``.cache/demo_data``) on first use.

    python -m basque_vlm.data_stats --config=configs/demo.py --config.data.basque_ratio=0.2

Model shapes divide over a ``data=2, fsdp=2, tensor=2`` mesh.
"""

from pathlib import Path

import ml_collections

DEMO_DATA = Path(__file__).resolve().parent.parent / ".cache" / "demo_data"
IMAGE_SIZE = 64  # basque_vlm.data.synthetic.IMAGE_SIZE
PATCH_SIZE = 8


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # The demo tokenizer's specials (synthetic.SPECIAL_TOKENS): <|pad|>=0, <|im_start|>=1,
    # <|im_end|>=2, <image>=3; its vocabulary is at most 512.
    config.model = dict(
        text=dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=32, rope_theta=10000.0,
                  max_position_embeddings=256, tie_word_embeddings=False),
        vision=dict(kind="clip", hidden_size=64, intermediate_size=128, num_layers=2,
                    num_heads=4, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        connector="mlp2x_gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_token_id=3,
        pad_token_id=0,
        eos_token_ids=(2,),
    )

    config.data = dict(
        root=str(DEMO_DATA),        # relative paths below are under it
        synthetic=True,             # generate the demo data under root on first use
        synthetic_seed=0,
        tokenizer="tokenizer",      # tokenizer + chat template + preprocessor_config.json
        tokens_per_image=(IMAGE_SIZE // PATCH_SIZE) ** 2,  # CLIP, class token dropped
        sources=dict(
            demo_vqa_eu=dict(path="datasets/train_eu", kind="multimodal"),
            demo_vqa_en=dict(path="datasets/train_en", kind="multimodal"),
        ),
        heldout=dict(eu="datasets/heldout_eu", en="datasets/heldout_en"),
        basque_ratio=0.5,
        text_only_ratio=0.0,
        caption_ratio=0.0,
        max_length=128,
        length_buckets=(88, 96, 128),
        max_images=1,
        global_batch_size=16,
        seed=0,
        num_workers=0,              # Grain worker processes
        num_threads=2,
        prefetch=2,
    )

    config.train = dict(
        num_steps=600,
        log_every=10,
        checkpoint_every=200,
        learning_rate=1e-3,
        warmup_steps=20,
        weight_decay=0.0,
    )

    config.mesh = dict(data=-1, fsdp=1, tensor=1)  # -1: fill with the remaining devices
    return config
