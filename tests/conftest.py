import importlib.util
import os
import sys
from pathlib import Path

# Eight simulated CPU devices for the sharding tests; a user's own XLA_FLAGS are left alone.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from basque_vlm.testing import smollm2
    return smollm2.hf_folder()


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The synthetic demo data (``configs/demo.py``'s), generated once per test session; the
    demo tasks and ``configs/demo.py`` find it through ``$BASQUE_VLM_DEMO_DATA`` (this process's
    and its subprocesses')."""
    from basque_vlm.demo import synthetic

    root = synthetic.ensure(tmp_path_factory.mktemp("demo") / "data")
    os.environ["BASQUE_VLM_DEMO_DATA"] = str(root)
    return root


@pytest.fixture(scope="session")
def gcs_server():
    """A Cloud Storage JSON API on 127.0.0.1 (`gcs_server.GcsServer`), for the whole session."""
    for module in ("gcp_storage_emulator", "gcsfs"):  # gcsfs: not imported before the env
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    from gcs_server import GcsServer

    server = GcsServer.start()
    os.environ.update(server.env)  # before gcsfs is imported: it reads some of it then
    yield server
    server.stop()


@pytest.fixture
def gcs(gcs_server):
    """``gs://bucket`` served by `gcs_server` (for this process and the subprocesses it starts),
    empty and without faults."""
    import gcsfs
    from etils.epath import backend

    gcs_server.reset()
    # no filesystem (nor its listings) left from an earlier test
    backend.fsspec_backend._get_filesystem.cache_clear()
    gcsfs.GCSFileSystem.clear_instance_cache()
    yield gcs_server
    gcs_server.release()  # a request still held would keep a client waiting
