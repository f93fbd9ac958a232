"""Training batches give each row its own image slots; splicing must follow them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from test_sharding import tiny_config
from basque_vlm.model.vlm import VLM


def test_slots_per_row_match_row_major_order():
    cfg = tiny_config()
    model = VLM(cfg, nnx.Rngs(0))
    span = [cfg.image_token_id] * cfg.tokens_per_image
    rows = [[5, 6] + span + [7, 8] + [9] * len(span),   # one image, slot 1 unused
            [5, 6, 7, 8] + [9] * 2 * len(span),         # text only, both slots unused
            [5] + span + [6] + span + [7, 8, 9]]          # two images
    width = max(map(len, rows))
    ids = jnp.asarray([r + [0] * (width - len(r)) for r in rows])
    images = jax.random.normal(jax.random.key(0), (6, 3, 28, 28))  # 3 rows x 2 slots
    used = images[jnp.asarray([0, 4, 5])]

    by_slot = model(ids, images, images_per_row=2)
    row_major = model(ids, used)
    np.testing.assert_allclose(np.asarray(by_slot), np.asarray(row_major), atol=1e-6)


def test_slot_overflow_is_an_error():
    cfg = tiny_config()
    model = VLM(cfg, nnx.Rngs(0))
    ids = jnp.asarray([[cfg.image_token_id] * (2 * cfg.tokens_per_image)])
    with pytest.raises(ValueError, match="row 0 has"):
        model(ids, jnp.zeros((1, 3, 28, 28)), images_per_row=1)
