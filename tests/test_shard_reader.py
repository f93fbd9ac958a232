"""`store.shard_reader`: an Orbax checkpoint read straight into device shards."""

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from basque_vlm.store import shard_reader

VALUES = {"embed": np.arange(8 * 12, dtype=np.float32).reshape(8, 12) / 7,
          "stack": {"kernel": np.random.default_rng(0).normal(size=(3, 8, 4)).astype(np.float32)},
          "scale": np.float32(2.5)}


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((2, 4), ("a", "b"), axis_types=(AxisType.Auto,) * 2)


def save(path: epath.Path, tree) -> epath.Path:
    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(path, tree)
    return path


def read(path: epath.Path, target):
    return shard_reader.read_placed(path, ocp.PyTreeCheckpointHandler().metadata(path), target)


def target(mesh, specs, dtype=None):
    return jax.tree.map(lambda v, spec: jax.ShapeDtypeStruct(
        np.shape(v), dtype or v.dtype, sharding=NamedSharding(mesh, spec)), VALUES, specs)


SPLIT = {"embed": P("a", "b"), "stack": {"kernel": P(None, "b", "a")}, "scale": P()}
OTHER = {"embed": P(("a", "b"), None), "stack": {"kernel": P()}, "scale": P()}


@pytest.mark.parametrize("stored_as", ["whole", "sharded"])
@pytest.mark.parametrize("specs", [SPLIT, OTHER], ids=["split", "resplit-and-replicated"])
def test_reads_every_shard_as_stored(tmp_path, mesh, stored_as, specs):
    """Whole tensors (one chunk each, as `convert` writes them) and tensors saved from shards of
    another layout (a training checkpoint: a chunk per shard) read into any layout."""
    tree = VALUES if stored_as == "whole" else jax.tree.map(
        lambda v, t: jax.device_put(v, t.sharding), VALUES, target(mesh, SPLIT))
    path = save(epath.Path(tmp_path) / "params", tree)
    got = read(path, target(mesh, specs))
    for value, array, want in zip(jax.tree.leaves(VALUES), jax.tree.leaves(got),
                                  jax.tree.leaves(target(mesh, specs))):
        assert array.sharding == want.sharding and array.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(array), value)
        for shard in array.addressable_shards:
            np.testing.assert_array_equal(np.asarray(shard.data), value[shard.index])
        # replicated shards too: a buffer donated on one device must not change another's
        buffers = {shard.data.unsafe_buffer_pointer() for shard in array.addressable_shards}
        assert len(buffers) == len(array.addressable_shards)


def test_casts_to_the_wanted_dtype(tmp_path, mesh):
    path = save(epath.Path(tmp_path) / "params", VALUES)
    got = read(path, target(mesh, SPLIT, ml_dtypes.bfloat16))
    for value, array in zip(jax.tree.leaves(VALUES), jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(array), np.asarray(value).astype(
            ml_dtypes.bfloat16))


def test_a_shape_that_differs_names_the_tensor(tmp_path, mesh):
    path = save(epath.Path(tmp_path) / "params", VALUES)
    want = target(mesh, SPLIT)
    want["embed"] = jax.ShapeDtypeStruct((8, 16), np.float32, sharding=want["embed"].sharding)
    with pytest.raises(ValueError, match=r"embed is stored as \(8, 12\), not \(8, 16\)"):
        read(path, want)


def test_host_buffers_are_adopted_by_cpu_devices():
    """The premise of the memory bound: on CPU a shard's host buffer becomes the device's."""
    host = shard_reader.host_buffer((64, 32), np.dtype(np.float32))
    host[...] = 1
    device = jax.devices()[-1]
    assert jax.device_put(host, device).unsafe_buffer_pointer() == host.ctypes.data
