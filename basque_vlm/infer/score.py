"""Scoring text: the log-probability a model gives each token of a sequence after the ones before
it, and whether that token is its greedy choice (what log-likelihood benchmarks add up).

Sequences are batched longest first, right-padded to a multiple of ``length_multiple`` (one
compilation serves many lengths) and split by rows over the mesh; the padding is masked, so a
sequence's scores do not depend on the rest of its batch. The vocabulary's log-softmax is taken
in float32 over ``length_multiple`` positions at a time, so the logits of a whole batch are never
in memory at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from basque_vlm.model import sharding
from basque_vlm.model.vlm import VLM


def next_token_scores(model: VLM, mesh: Mesh, sequences: Sequence[Sequence[int]],
                      batch_size: int, *, pad_id: int = 0, length_multiple: int = 64,
                      progress: Callable[[int], None] | None = None
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each token sequence (two tokens or more; text only), ``(log_probs, greedy)``: float32
    log-probabilities of its tokens after the first, each given those before it, and whether
    each is the argmax of its prediction. ``model`` is placed on ``mesh``; ``batch_size`` rows
    run at once (rounded up to whole row shards); ``progress`` gets the count done so far."""
    if any(len(s) < 2 for s in sequences):
        raise ValueError("every scored sequence needs at least two tokens")
    group = sharding.row_shards(mesh)
    rows = -(-batch_size // group) * group
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    graphdef, state = nnx.split(model)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with sharding.use_mesh(mesh):
        for start in range(0, len(order), rows):
            batch = [sequences[i] for i in order[start:start + rows]]
            inputs, targets, mask = _batch(batch, rows, pad_id, length_multiple)
            placed = [sharding.shard_rows(mesh, a.shape, lambda index, a=a: a[index])
                      for a in (inputs, targets, mask)]
            log_probs, greedy = (np.asarray(a) for a in _scores(graphdef, state, *placed,
                                                                  chunk=length_multiple))
            for row, i in enumerate(order[start:start + rows]):
                n = len(sequences[i]) - 1
                out[i] = log_probs[row, :n], greedy[row, :n]
            if progress is not None:
                progress(len(out))
    return [out[i] for i in range(len(sequences))]


def _batch(sequences: list[Sequence[int]], rows: int, pad_id: int, multiple: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs (each sequence but its last token), targets (but its first) and the mask,
    ``[rows, T]``, right-padded; rows past the sequences repeat the first one."""
    length = -(-max(len(s) - 1 for s in sequences) // multiple) * multiple
    inputs = np.full((rows, length), pad_id, np.int32)
    targets = np.zeros((rows, length), np.int32)
    mask = np.zeros((rows, length), np.int32)
    for row in range(rows):
        tokens = np.asarray(sequences[row] if row < len(sequences) else sequences[0])
        inputs[row, :len(tokens) - 1] = tokens[:-1]
        targets[row, :len(tokens) - 1] = tokens[1:]
        mask[row, :len(tokens) - 1] = 1
    return inputs, targets, mask


@functools.partial(jax.jit, static_argnames=("graphdef", "chunk"))
def _scores(graphdef, state, inputs, targets, mask, *, chunk: int):
    model = nnx.merge(graphdef, state)
    lm = model.language_model
    hidden = model.hidden_states(inputs, attention_mask=mask)
    rows, length, width = hidden.shape

    def score(block):
        h, t = block
        logits = lm.logits(h).astype(jnp.float32)
        log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), t[..., None],
                                        axis=-1)[..., 0]
        return log_probs, jnp.argmax(logits, axis=-1) == t

    blocks = (hidden.reshape(rows, length // chunk, chunk, width).swapaxes(0, 1),
              targets.reshape(rows, length // chunk, chunk).swapaxes(0, 1))
    log_probs, greedy = jax.lax.map(score, blocks)
    # on a mesh: every process gets all rows
    return tuple(sharding.constrain(a.swapaxes(0, 1).reshape(rows, length), (None, None))
                 for a in (log_probs, greedy))
