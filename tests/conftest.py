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
