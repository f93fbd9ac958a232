"""The embedded demo: a tiny LLaVA-style model trained from scratch — vision tower, connector and
language model, all parameters, in one run — on CPU, on the synthetic bilingual scenes
(``basque_vlm.data.synthetic``: colour, shape, count, yes/no and position questions in Basque and
English), generated under ``data.root`` (the repository's ``.cache/demo_data``) on first use.

It reproduces the pipeline of the paper (the chat template, the Basque/English mixture, loss on
the answers only, AdamW + warmup + cosine) at a size that trains in a few minutes on two cores,
and learns to answer the held-out questions (``demo_vqa_eu``, ``demo_vqa_en``).

    python -m basque_vlm.train --config=configs/demo.py --workdir=workdir/demo
    python -m basque_vlm.data_stats --config=configs/demo.py --config.data.basque_ratio=0.2

Every sharded size (batch, heads, kv heads, MLP, vocabulary, hidden) divides over a
``data=2, fsdp=2, tensor=2`` mesh (``--config.mesh.data=2 --config.mesh.fsdp=2
--config.mesh.tensor=2`` on 8 devices).
"""

import sys
from pathlib import Path

import ml_collections

sys.path.insert(0, str(Path(__file__).resolve().parent))  # configs/common.py, from any cwd
import common  # noqa: E402

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
    # How to compute (not stored with the weights): float32, layers unrolled (faster on CPU).
    config.compute = dict(dtype="float32", scan_layers=False, remat="none", attention="auto")

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
        global_batch_size=32,
        seed=0,
        num_workers=0,              # Grain worker processes
        num_threads=2,
        prefetch=2,
    )

    # Everything trains (from scratch), at one learning rate. The answers are ~3 supervised
    # tokens a sample: the model first learns the answers' priors (loss ~0.36, 42% held-out
    # accuracy) and starts reading the images after ~2,000 steps of 32 (smaller batches take far
    # longer); 4,000 steps reach ~0.6.
    config.optim = common.optim(vision_tower=1e-3, connector=1e-3, language_model=1e-3,
                                warmup_ratio=0.03)
    config.train = common.train(num_steps=4000, log_every=100, checkpoint_every=1000)
    config.mesh = common.mesh(data=-1)
    # The held-out questions (100 per language, the demo data's own split) every 1,000 steps
    # and at the end: a few seconds each time. --config.eval.tasks= turns it off.
    config.eval = common.evaluation(tasks="demo_vqa_eu,demo_vqa_en", every=1000, limit=100,
                                    batch_size=32)
    return config
