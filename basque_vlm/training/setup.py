"""Where a run starts: the model config, the initial parameters, the workdir's tokenizer files."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from basque_vlm.data import mixture
from basque_vlm.data.conversation import IMAGE_PLACEHOLDER
from basque_vlm.model.vlm import VLM, Params, VLMConfig
from basque_vlm.runtime import paths
from basque_vlm.store import checkpoint
from basque_vlm.training import configs

STEP_COMPUTE_KEYS = ("logits_chunk",)  # ``compute`` keys the train step reads, not the model


def model_configs(config: Mapping[str, Any], stored: VLMConfig | None = None
                  ) -> tuple[VLMConfig, VLMConfig]:
    """``(stored, computed)``: the model as ``init_checkpoint`` (a converted checkpoint or a
    training workdir) or ``model`` (from scratch) describes it — or as ``stored`` gives it —
    and with the ``compute`` overrides (``dtype``, ``scan_layers``, ``remat``, ``attention``)
    applied."""
    stored = stored or _stored_config(config)
    if stored.vision is None:
        raise ValueError("init_checkpoint is a text-only checkpoint (no vision tower): training "
                         "needs a VLM (convert --llm_dir --vision_dir --projector)")
    overrides = {k: v for k, v in _plain(config.get("compute") or {}).items()
                 if k not in STEP_COMPUTE_KEYS}
    return stored, VLMConfig.from_dict(stored.to_dict(), **overrides)


def logits_chunk(config: Mapping[str, Any]) -> int:
    """``compute.logits_chunk``: positions per row whose logits the loss computes at a time
    (0: all; `loss.chunked_cross_entropy_sum`)."""
    return int((config.get("compute") or {}).get("logits_chunk", 0))


def _stored_config(config: Mapping[str, Any]) -> VLMConfig:
    if config.get("init_checkpoint"):
        return checkpoint.load_config(config["init_checkpoint"])
    if config.get("model"):
        return VLMConfig.from_dict(_plain(config["model"]))
    raise ValueError("the config needs init_checkpoint (a converted checkpoint or a workdir) "
                     "or model (an architecture to train from scratch)")


def initial_params(config: Mapping[str, Any], cfg: VLMConfig, target: Params) -> Params:
    """All parameters, placed and typed as ``target`` (ShapeDtypeStructs with shardings): read
    from ``init_checkpoint``, or initialised with ``train.seed`` directly on the devices."""
    if config.get("init_checkpoint"):
        return checkpoint.load_params(config["init_checkpoint"], target)
    seed = configs.train_setting(config, "seed")

    def init() -> Params:
        params = nnx.state(VLM(cfg, nnx.Rngs(seed))).to_pure_dict()
        return jax.tree.map(lambda a, t: a.astype(t.dtype), params, target)

    return jax.jit(init, out_shardings=jax.tree.map(lambda t: t.sharding, target))()


def write_assets(config: Mapping[str, Any], cfg: VLMConfig, workdir: str | Path) -> None:
    """The tokenizer, processor and chat template files, so that the workdir reads as a project
    checkpoint: copied from ``init_checkpoint``, or for a model trained from scratch, a LLaVA
    processor made from the data's tokenizer folder. Either folder may be remote (``gs://``)."""
    from basque_vlm.hf import importer

    if config.get("init_checkpoint"):
        importer.copy_assets(config["init_checkpoint"], workdir)
        return
    from transformers import AutoImageProcessor, AutoTokenizer, LlavaProcessor

    folder = str(paths.local_copy(mixture.resolve(config["data"], config["data"]["tokenizer"])))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    processor = LlavaProcessor(
        image_processor=AutoImageProcessor.from_pretrained(folder, backend="pil"),
        tokenizer=tokenizer, patch_size=cfg.vision.patch_size,
        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        image_token=IMAGE_PLACEHOLDER, num_additional_image_tokens=int(cfg.vision.has_class_token),
        chat_template=tokenizer.chat_template)
    if not paths.is_remote(workdir):
        processor.save_pretrained(str(workdir))
        return
    with tempfile.TemporaryDirectory() as local:  # save_pretrained writes local files only
        processor.save_pretrained(local)
        paths.copy_files(local, workdir, ["*"])


def _plain(value: Any) -> Any:
    """A ConfigDict (or dict) as plain dicts."""
    return value.to_dict() if hasattr(value, "to_dict") else dict(value)
