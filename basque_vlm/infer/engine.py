"""Many prompts, greedy, on a mesh: static batches, or in-flight batching.

    engine = Engine(model, mesh, slots=16)
    token_ids = engine.generate([Request(ids, max_new_tokens=64), ...])   # in input order

``static``: the prompts in batches of ``slots`` rows (`decode.generate`); a batch runs until its
longest answer ends. ``inflight`` (the default), as serving engines keep their chips busy: a KV
cache of ``slots`` rows, each holding one prompt at a time from position 0, and a stage of
prompts prefilled ahead. A prefill takes the next ``stage_rows`` prompts (right-padded to a
length bucket, in batches of whole row shards times a power of two) into the stage, and the
same pass makes the next token of every busy slot: the layers see the prompts' tokens and the
busy rows' side by side (`llama.Packed`), so the weights are read once for both. Each decode
call makes up to ``sync_every`` tokens for every slot, and as a slot's answer ends, the next
staged prompt moves into it inside the loop (a copy of its keys and values; the host, which
sees the tokens, replays the same moves); once the stage is empty and prompts wait, the call
ends and the next prefill fills the stage while the slots decode. Every row attends only to
its own slots and is masked by its own length, so its tokens are those it gets decoded
alone.

Prompts that all begin with the same tokens (a system message, few-shot examples: translation's
prompts share hundreds) have that prefix prefilled once: each prefill copies its keys and values
into its rows and computes only the rest of each prompt, from the prefix's end.

Every process of the mesh runs the same loop on the same requests (the tokens come back to every
process, so they all take the same decisions); each builds only the image rows its own devices
hold.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from basque_vlm.infer import decode
from basque_vlm.infer.prompts import left_padded
from basque_vlm.infer.sampling import greedy
from basque_vlm.model import sharding
from basque_vlm.model.llama import Packed, init_cache, pack, unpack, unstack_cache
from basque_vlm.model.vlm import VLM

BATCHING = ("inflight", "static")
Pixels = Callable[[], np.ndarray]  # a prompt's images: [N, C, H, W], made when needed


@dataclasses.dataclass(frozen=True)
class Request:
    """One prompt: its token ids (no padding), how long its answer may be, and its images
    (``images`` of them, made by ``pixel_values`` when its prefill needs them)."""

    input_ids: np.ndarray
    max_new_tokens: int
    pixel_values: Pixels | None = None
    images: int = 0


class Engine:
    """Greedy decoding of a model placed on ``mesh`` (`store.checkpoint.load_model`)."""

    def __init__(self, model: VLM, mesh: Mesh, *, slots: int, sync_every: int = 8,
                 length_multiple: int = 64, prefill_multiple: int = 8,
                 stage_rows: int | None = None):
        """``length_multiple`` rounds static batches' prompts and caches; ``prefill_multiple``
        the in-flight cache, prompts and shared prefix: finer, since every decode step reads
        the whole cache and most prompts are short (VQA's prompts of 62-64 tokens share 24: a
        multiple of 16 prefilled 48 tokens a row and cached 128, a multiple of 8 prefills 40
        and caches 88). ``stage_rows``: how many prompts an in-flight prefill takes at once
        (None: as many as there are slots)."""
        self.model, self.mesh = model, mesh
        # Split once: splitting a model of a few hundred weights costs ~10 ms of host time,
        # which every prefill and decode call would otherwise add.
        self.graphdef, self.state = nnx.split(model)
        self.group = sharding.row_shards(mesh)
        self.slots = -(-slots // self.group) * self.group  # whole row shards
        self.sync_every, self.length_multiple = sync_every, length_multiple
        self.prefill_multiple = prefill_multiple
        self.stage_rows = stage_rows or self.slots
        self.eos = tuple(model.cfg.eos_token_ids)
        cfg = model.cfg
        self.pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else (
            self.eos[0] if self.eos else 0)

    def generate(self, requests: Sequence[Request], batching: str = "inflight",
                 progress: Callable[[int], None] | None = None) -> list[list[int]]:
        """Each request's generated ids, up to and including its end-of-turn token, in the
        requests' order; ``progress`` gets the count done so far."""
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        if not requests:
            return []
        run = self._inflight if batching == "inflight" else self._static
        with sharding.use_mesh(self.mesh):
            return run(list(requests), progress or (lambda done: None))

    # -- static batches ---------------------------------------------------------------------

    def _static(self, requests: list[Request], progress: Callable[[int], None]
                ) -> list[list[int]]:
        # Text-only and image prompts never share a batch; similar lengths batch together.
        order = sorted(range(len(requests)), key=lambda i: (requests[i].pixel_values is None,
                                                             len(requests[i].input_ids)))
        out: list[list[int]] = [[] for _ in requests]
        start = 0
        while start < len(order):
            with_image = requests[order[start]].pixel_values is not None
            batch = [i for i in order[start:start + self.slots]
                     if (requests[i].pixel_values is not None) == with_image]
            start += len(batch)
            ids, mask = left_padded([requests[i].input_ids for i in batch], self.pad_id)
            pixels = (np.concatenate([requests[i].pixel_values() for i in batch])
                      if with_image else None)
            budget = max(requests[i].max_new_tokens for i in batch)
            tokens = decode.generate(self.model, ids, mask, pixels, max_new_tokens=budget,
                                     eos_ids=self.eos, pad_id=self.pad_id,
                                     length_multiple=self.length_multiple, mesh=self.mesh)
            for i, row in zip(batch, decode.trim(tokens, self.eos)):
                out[i] = row[:requests[i].max_new_tokens]
            progress(start)
        return out

    # -- in-flight batching -----------------------------------------------------------------

    def _inflight(self, requests: list[Request], progress: Callable[[int], None]
                  ) -> list[list[int]]:
        longest = max(len(r.input_ids) + r.max_new_tokens for r in requests) + self.sync_every
        stage_shape = (self._prefill_rows(self.stage_rows),
                       _round_up(max(len(r.input_ids) for r in requests), self.prefill_multiple))
        state = _SlotState.empty(self, _round_up(longest, self.prefill_multiple), stage_shape)
        image_token = getattr(self.model.cfg, "image_token_id", None)
        prefix = shared_prefix([r.input_ids for r in requests], image_token,
                               self.prefill_multiple)
        state.share_prefix(self, np.asarray(requests[0].input_ids[:prefix], np.int32))
        images = max(r.images for r in requests)  # image slots per row
        waiting = collections.deque(range(len(requests)))
        staged: collections.deque[tuple[int, int]] = collections.deque()  # (stage row, request)
        holder: list[int | None] = [None] * self.slots  # the request in each slot
        out: list[list[int]] = [[] for _ in requests]
        done = 0

        def take(i: int, token: int) -> bool:
            """Adds a token to request ``i``'s answer; whether the answer goes on."""
            nonlocal done
            out[i].append(token)
            if token in self.eos or len(out[i]) >= requests[i].max_new_tokens:
                done += 1
                progress(done)
                return False
            return True

        def move_in(free: list[int]) -> None:
            """The stage's next prompts go into ``free`` slots, in order (as `_decode` does)."""
            for slot in free[:len(staged)]:
                holder[slot] = staged.popleft()[1]

        while waiting or staged or any(h is not None for h in holder):
            if waiting and not staged:
                # Prefill ahead: the next prompts wait in the stage while the slots decode.
                rows = self._prefill_rows(min(self.stage_rows, len(waiting)))
                group = [waiting.popleft() for _ in range(min(rows, len(waiting)))]
                busy = np.array([h is not None for h in holder])
                first, stepped = state.prefill(self, [requests[i] for i in group], rows, images,
                                               busy)
                for slot in np.flatnonzero(busy):
                    if not take(holder[slot], int(stepped[slot])):
                        holder[slot] = None
                staged.extend((row, i) for row, (i, token) in enumerate(zip(group, first))
                              if take(i, token))
                continue
            # tokens each slot and each staged prompt may still make: 0 for a free one
            remaining = np.array([0 if h is None else requests[h].max_new_tokens - len(out[h])
                                  for h in holder], np.int32)
            stage_left = np.zeros(state.stage_rows, np.int32)
            for row, i in staged:
                stage_left[row] = requests[i].max_new_tokens - len(out[i])
            steps = state.decode(self, remaining, stage_left, bool(waiting))
            ended = [s for s in range(self.slots) if holder[s] is None]
            for step in steps.T:
                move_in(ended)
                ended = []
                for slot, token in enumerate(step):
                    if holder[slot] is not None and not take(holder[slot], int(token)):
                        holder[slot] = None
                        ended.append(slot)
        return out

    def _prefill_rows(self, prompts: int) -> int:
        """How many rows the next prefill batch has, for ``prompts`` to prefill: the most whole
        row shards times a power of two that they fill (one row shard when they fill none), so
        that a few shapes compile and many prompts prefill at once."""
        shards = max(1, prompts // self.group)
        return self.group * 2 ** (shards.bit_length() - 1)


def shared_prefix(prompts: Sequence[np.ndarray], image_token: int | None, multiple: int) -> int:
    """How many leading tokens every prompt shares and can prefill once: their common prefix,
    cut before an image placeholder (image features differ from prompt to prompt) and before
    the shortest prompt's last token (each prefill needs a token of its own to predict from),
    rounded down to a multiple of ``multiple`` (so that few prefix lengths compile); 0 for a
    single prompt."""
    if len(prompts) < 2:
        return 0
    first = np.asarray(prompts[0])
    common = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        differs = np.flatnonzero(np.asarray(p[:common]) != first[:common])
        common = int(differs[0]) if len(differs) else common
    if image_token is not None:
        images = np.flatnonzero(first[:common] == image_token)
        common = int(images[0]) if len(images) else common
    return common // multiple * multiple


@dataclasses.dataclass
class _SlotState:
    """The device side of in-flight batching: the KV cache of every slot, each slot's last token
    (not yet in the cache) and its position (where that token goes); the keys and values of the
    prefix every prompt shares (None: none); and the stage, the last prefill's prompts
    (``(cache, tokens, positions)`` as the slots have them) until they move into slots."""

    cache: object
    tokens: jax.Array
    positions: jax.Array
    stage_shape: tuple[int, int]  # (rows, length): one shape a run, so one compile
    prefix: object = None
    stage: tuple | None = None

    @property
    def stage_rows(self) -> int:
        return self.stage_shape[0]

    @classmethod
    def empty(cls, engine: Engine, length: int, stage_shape: tuple[int, int]) -> _SlotState:
        cache, tokens, positions = _empty(engine.graphdef, engine.state, slots=engine.slots,
                                          length=length)
        return cls(cache, tokens, positions, stage_shape)

    @property
    def prefix_length(self) -> int:
        return 0 if self.prefix is None else jax.tree.leaves(self.prefix)[0].shape[-2]

    def share_prefix(self, engine: Engine, ids: np.ndarray) -> None:
        """Prefills ``ids``, the tokens every prompt begins with, once (nothing when empty)."""
        if not len(ids):
            return
        self.prefix = _prefix(engine.graphdef, engine.state,
                              decode._rows_on_mesh(engine.mesh, ids[None], 1))

    def prefill(self, engine: Engine, group: list[Request], rows: int, images: int,
                busy: np.ndarray) -> tuple[list[int], np.ndarray]:
        """Prefills ``group`` (a batch of ``rows``, padded) from the end of the shared prefix
        into a new stage and, in the same pass, decodes a token for every ``busy`` slot;
        returns each prompt's first token and every slot's new one (meaningless where not
        busy)."""
        mesh = engine.mesh
        start = self.prefix_length
        length = _round_up(max(len(r.input_ids) for r in group) - start,
                           engine.prefill_multiple)
        ids = np.full((rows, length), engine.pad_id, np.int32)
        lengths = np.ones(rows, np.int32)
        for row, request in enumerate(group):
            ids[row, :len(request.input_ids) - start] = request.input_ids[start:]
            lengths[row] = len(request.input_ids) - start
        pixels = None
        if any(r.images for r in group):
            v = engine.model.cfg.vision
            pixels = _group_pixels(mesh, group, rows, images,
                                   (v.num_channels, v.image_size, v.image_size))
        place = functools.partial(decode._rows_on_mesh, mesh, rows=rows)
        self.cache, self.tokens, self.positions, self.stage, first, stepped = _prefill(
            engine.graphdef, engine.state, self.cache, self.tokens, self.positions,
            decode._rows_on_mesh(mesh, busy, len(busy)), self.prefix, place(ids),
            place(lengths), pixels, images_per_row=images, groups=engine.group,
            stage_shape=self.stage_shape)
        return np.asarray(first)[:len(group)].tolist(), np.asarray(stepped)

    def decode(self, engine: Engine, remaining: np.ndarray, stage_left: np.ndarray,
               waiting: bool) -> np.ndarray:
        """Up to ``sync_every`` tokens for every slot that may make ``remaining`` more
        (``[slots, steps]``). Free slots, and slots as they end, take the stage's rows that may
        make ``stage_left`` more, in order; a call ends early once every slot has ended, or,
        when prompts are ``waiting`` for a prefill, once the stage is empty."""
        place = functools.partial(decode._rows_on_mesh, engine.mesh)
        self.cache, self.tokens, self.positions, out, steps = _decode(
            engine.graphdef, engine.state, self.cache, self.tokens, self.positions,
            place(remaining, len(remaining)), self.stage, place(stage_left, len(stage_left)),
            jnp.bool_(waiting), steps=engine.sync_every, eos_ids=engine.eos)
        return np.asarray(out)[:, :int(steps)]


def _group_pixels(mesh: Mesh, group: list[Request], rows: int, images: int,
                  shape: tuple[int, int, int]) -> jax.Array:
    """``[rows * images, C, H, W]``: row ``r``'s images in its ``images`` slots (zeros where it
    has fewer, and for padding rows); each process decodes only its own rows' images."""

    def fetch(index: slice) -> np.ndarray:
        out = np.zeros((len(range(*index.indices(rows))), images, *shape), np.float32)
        for k, row in enumerate(range(*index.indices(rows))):
            if row < len(group) and group[row].pixel_values:
                pixels = group[row].pixel_values()
                out[k, :len(pixels)] = pixels
        return out

    placed = sharding.shard_rows(mesh, (rows, images, *shape), fetch)
    return placed.reshape(rows * images, *shape)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _layer_caches(lm: nnx.Module, cache: dict[str, jax.Array]) -> object:
    """A stacked cache for scanned layers, per-layer caches for unrolled ones."""
    return unstack_cache(cache) if isinstance(lm.layers, nnx.List) else cache


@functools.partial(jax.jit, static_argnames=("graphdef", "slots", "length"))
def _empty(graphdef, state, *, slots: int, length: int):
    lm = nnx.merge(graphdef, state).language_model
    zeros = sharding.constrain(jnp.zeros((slots,), jnp.int32), ("batch",))
    return _layer_caches(lm, init_cache(lm.cfg, slots, length)), zeros, zeros


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _prefix(graphdef, state, input_ids):
    """The keys and values of ``input_ids`` ``[R, P]`` (the same prompt prefix in every row)."""
    lm = nnx.merge(graphdef, state).language_model
    rows, length = input_ids.shape
    positions = jnp.broadcast_to(jnp.arange(length), (rows, length))
    _, cache = lm(lm.embed(input_ids), positions, jnp.ones((rows, length), bool),
                  _layer_caches(lm, init_cache(lm.cfg, rows, length)), 0)
    return cache


@functools.partial(jax.jit,
                   static_argnames=("graphdef", "images_per_row", "groups", "stage_shape"),
                   donate_argnames=("cache", "tokens", "positions"))
def _prefill(graphdef, state, cache, tokens, positions, busy, prefix, input_ids, lengths,
             pixel_values, *, images_per_row: int, groups: int, stage_shape: tuple[int, int]):
    """Prefills right-padded prompts ``[G, T]`` that follow the ``P`` tokens of ``prefix`` (keys
    and values, any number of identical rows; None: ``P = 0``) into a stage: their keys and
    values at all ``P + T`` positions, first tokens and those tokens' positions. In the same
    pass, every ``busy`` row of ``cache`` decodes its next token, as a step of `_decode` would:
    the layers see both batches' tokens side by side (`llama.Packed`), so each weight is read
    once for both."""
    model = nnx.merge(graphdef, state)
    lm = model.language_model
    rows, length = input_ids.shape
    slots, slot_length = tokens.shape[0], jax.tree.leaves(cache)[0].shape[-2]
    start = 0 if prefix is None else jax.tree.leaves(prefix)[0].shape[-2]
    valid = jnp.arange(start + length)[None] < (start + lengths)[:, None]
    prompt_positions = jnp.broadcast_to(start + jnp.arange(length), (rows, length))
    x = (model.embed(input_ids, pixel_values, images_per_row) if pixel_values is not None
         else lm.embed(input_ids))
    fresh = _layer_caches(lm, init_cache(lm.cfg, rows, start + length))
    if prefix is not None:
        fresh = jax.tree.map(_with_prefix, fresh, prefix)
    # A slot that is not busy writes its meaningless keys at its last position, which no
    # prompt reaches, not at its old one.
    write_at = jnp.where(busy, positions, slot_length - 1)
    slot_valid = jnp.arange(slot_length)[None] <= write_at[:, None]
    packed = _packed_caches(fresh, cache, (valid, slot_valid), (start, write_at),
                            ((rows, length), (slots, 1)))
    hidden, packed = lm(pack([x, lm.embed(tokens[:, None])], groups),
                        pack([prompt_positions, positions[:, None]], groups), None, packed)
    prompts, steps = unpack(hidden, ((rows, length), (slots, 1)))
    last = jnp.take_along_axis(prompts, (lengths - 1)[:, None, None], axis=1)[:, 0]
    chosen = greedy(lm.logits(jnp.concatenate([last, steps[:, 0]])))
    first, stepped = chosen[:rows], chosen[rows:]
    stage_cache, cache = ([p.caches[i] for p in packed] if isinstance(packed, list) else
                          packed.caches[i] for i in range(2))
    tokens = jnp.where(busy, stepped, tokens)
    positions = jnp.where(busy, jnp.minimum(positions + 1, slot_length - 1), positions)
    stage_rows, stage_length = stage_shape

    def padded(a: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        return jnp.pad(a, [(0, size - n) for n, size in zip(a.shape, shape)])

    def staged_kv(a: jax.Array) -> jax.Array:  # [..., rows, KVH, P + T, D], stacked or not
        return padded(a, (*a.shape[:-4], stage_rows, a.shape[-3], stage_length, a.shape[-1]))

    stage = (jax.tree.map(staged_kv, stage_cache),
             sharding.constrain(padded(first, (stage_rows,)), ("batch",)),
             sharding.constrain(padded(start + lengths, (stage_rows,)), ("batch",)))
    return (cache, tokens, positions, stage, sharding.constrain(first, (None,)),
            sharding.constrain(stepped, (None,)))


def _move_in(cache, tokens, positions, stage, into):
    """Moves each row ``r`` of ``stage`` (`_prefill`'s) into slot ``into[r]`` (out of range:
    stays): its keys and values, first token and that token's position."""
    stage_cache, stage_tokens, stage_positions = stage

    def move(slot_kv, stage_kv):
        rows = slot_kv.ndim - 4  # 1 when layers are stacked
        index = (slice(None),) * rows + (into, slice(None), slice(0, stage_kv.shape[-2]))
        return slot_kv.at[index].set(stage_kv, mode="drop")

    return (jax.tree.map(move, cache, stage_cache),
            tokens.at[into].set(stage_tokens, mode="drop"),
            positions.at[into].set(stage_positions, mode="drop"))


def _packed_caches(fresh, cache, kv_valid: tuple, offsets: tuple, shapes: tuple):
    """`llama.Packed` caches of the prompts (``fresh``) and the slots (``cache``): one per layer
    for unrolled layers, stacked (masks and offsets repeated per layer) for scanned ones."""
    if isinstance(cache, list):
        return [Packed((f, c), kv_valid, offsets, shapes) for f, c in zip(fresh, cache)]
    layers = jax.tree.leaves(cache)[0].shape[0]

    def per_layer(a):
        return jnp.broadcast_to(a, (layers, *jnp.shape(a)))

    return Packed((fresh, cache), *(tuple(map(per_layer, arrays)) for arrays in (kv_valid,
                                                                                  offsets)),
                  shapes)


def _with_prefix(fresh: jax.Array, prefix: jax.Array) -> jax.Array:
    """``fresh`` keys or values ``[G, KVH, P + T, D]`` (``[L, G, ...]`` stacked) with the first
    row of ``prefix`` (``[R, KVH, P, D]``) in positions ``0..P-1`` of every row."""
    rows = fresh.ndim - 4
    first = jax.lax.slice_in_dim(prefix, 0, 1, axis=rows)
    shape = (*fresh.shape[:-2], prefix.shape[-2], fresh.shape[-1])
    return jax.lax.dynamic_update_slice_in_dim(
        fresh, jnp.broadcast_to(first, shape).astype(fresh.dtype), 0, fresh.ndim - 2)


@functools.partial(jax.jit, static_argnames=("graphdef", "steps", "eos_ids"),
                   donate_argnames=("cache", "tokens", "positions"))
def _decode(graphdef, state, cache, tokens, positions, remaining, stage, stage_left, waiting, *,
            steps: int, eos_ids: tuple[int, ...]):
    """Up to ``steps`` greedy tokens for every row with ``remaining`` ones to make, each at its
    own position; a row stops at an end-of-turn token or its last one. Before each step, free
    rows (at the first step) or the rows that stopped at the step before take the rows of
    ``stage`` that may make ``stage_left`` more tokens, in order (`_move_in`). The loop ends
    once every row has stopped and the stage is empty, or, when prompts are ``waiting``, once
    the stage is empty. Returns the tokens ``[rows, steps]`` and how many steps ran."""
    lm = nnx.merge(graphdef, state).language_model
    slots, length = tokens.shape[0], jax.tree.leaves(cache)[0].shape[-2]
    key_slots = jnp.arange(length)
    eos = jnp.asarray(eos_ids, jnp.int32)

    def refill(cache, token, position, left, going, stage_left, freed):
        """The stage's next rows into the ``freed`` rows, in order, as many as both have."""
        live = stage_left > 0
        rank = jnp.cumsum(live) - 1
        moving = live & (rank < jnp.sum(freed))
        freed_rows = jnp.nonzero(freed, size=slots, fill_value=slots)[0]
        into = jnp.where(moving, freed_rows[jnp.clip(rank, 0, slots - 1)], slots)
        cache, token, position = _move_in(cache, token, position, stage, into)
        left = left.at[into].set(stage_left, mode="drop")
        going = going.at[into].set(True, mode="drop")
        return cache, token, position, left, going, jnp.where(moving, 0, stage_left)

    def cond(carry):
        i, *_, going, _, stage_left = carry
        live = jnp.any(stage_left > 0)
        return (i < steps) & (jnp.any(going) | live) & ~(waiting & ~live)

    def body(carry):
        i, cache, token, position, left, out, going, freed, stage_left = carry
        # Moving in before the layers read the cache lets XLA update it in place; after
        # the read, it copied every layer's keys and values twice a step.
        cache, token, position, left, going, stage_left = refill(
            cache, token, position, left, going, stage_left, freed)
        kv_valid = key_slots[None] <= position[:, None]
        hidden, cache = lm(lm.embed(token[:, None]), position[:, None], kv_valid, cache,
                           position)
        token = jnp.where(going, greedy(lm.logits(hidden[:, 0])), token)
        position = jnp.where(going, jnp.minimum(position + 1, length - 1), position)
        left = left - going
        still = going & (left > 0) & ~jnp.isin(token, eos)
        return (i + 1, cache, token, position, left, out.at[:, i].set(token), still,
                going & ~still, stage_left)

    going = remaining > 0
    out = jnp.zeros((slots, steps), jnp.int32)
    carry = (0, cache, tokens, positions, remaining, out, going, ~going, stage_left)
    i, cache, tokens, positions, _, out, *_ = jax.lax.while_loop(cond, body, carry)
    out, i = sharding.constrain(out, (None, None)), sharding.constrain(i, ())
    return cache, tokens, positions, out, i
