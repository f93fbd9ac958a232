"""Hugging Face folders → project parameters and config.

Two ways in: a ``LlavaForConditionalGeneration`` folder, or a Llama-family LLM folder plus a
CLIP/SigLIP folder assembled into a new VLM with a freshly initialised connector.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from basque_vlm.hf import mapping
from basque_vlm.hf.reader import CheckpointError, SafetensorsFolder, read_json, read_part
from basque_vlm.model.connector import CONNECTORS, Connector
from basque_vlm.model.llama import LlamaConfig
from basque_vlm.model.vision import VisionConfig
from basque_vlm.model.vlm import VLMConfig

IMAGE_TOKEN = "<image>"
VOCAB_MULTIPLE = 64  # a grown vocabulary is padded so that it still shards evenly
ASSET_PATTERNS = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template*",
                  "processor_config.json", "preprocessor_config.json", "generation_config.json")

# Lets a text-only chat template render LLaVA's list contents: each image item becomes the image
# placeholder and a newline (LLaVA's "<image>\n{question}"), text items their text.
LIST_CONTENT_PRELUDE = (
    "{%- set _msgs = namespace(items=[]) -%}"
    "{%- for _m in messages -%}"
    "{%- if _m['content'] is string -%}{%- set _msgs.items = _msgs.items + [_m] -%}"
    "{%- else -%}{%- set _text = namespace(s='') -%}"
    "{%- for _c in _m['content'] -%}"
    "{%- if _c['type'] == 'image' -%}{%- set _text.s = _text.s + '" + IMAGE_TOKEN + "\\n' -%}"
    "{%- elif _c['type'] == 'text' -%}{%- set _text.s = _text.s + _c['text'] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- set _msgs.items = _msgs.items + [{'role': _m['role'], 'content': _text.s}] -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- set messages = _msgs.items -%}")

Params = dict[str, Any]


def _abstract_shapes(cfg: VLMConfig) -> dict[str, dict[tuple[str, ...], tuple[int, ...]]]:
    from basque_vlm.checkpoint import abstract_model
    state = nnx.state(abstract_model(cfg), nnx.Param).to_pure_dict()
    shapes: dict[str, dict] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        keys = tuple(str(k.key) for k in path)
        shapes.setdefault(keys[0], {})[keys[1:]] = tuple(leaf.shape)
    return shapes


def _nest(flat: dict[tuple[str, ...], np.ndarray]) -> Params:
    out: Params = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def _eos_ids(*configs: dict[str, Any]) -> tuple[int, ...]:
    ids: list[int] = []
    for c in configs:
        eos = c.get("eos_token_id")
        for i in (eos if isinstance(eos, list) else [eos]):
            if i is not None and i not in ids:
                ids.append(int(i))
    return tuple(ids)


def _optional_json(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def _read_llm(st: SafetensorsFolder, text: LlamaConfig, shapes, dtype, prefixes, head_prefixes):
    prefix = st.find_prefix(prefixes, mapping.PROBES["llm"], "language model")
    root = "" if text.tie_word_embeddings else st.find_prefix(
        head_prefixes, mapping.PROBES["lm_head"], "lm_head")
    tensors = mapping.llama_tensors(text.tie_word_embeddings, text.attention_bias, text.mlp_bias)
    return read_part(st, prefix, tensors, shapes, dtype, root_prefix=root)


def _read_vision(st: SafetensorsFolder, vision: VisionConfig, shapes, dtype):
    prefix = st.find_prefix(mapping.VISION_PREFIXES, mapping.PROBES["vision"], "vision tower")
    return read_part(st, prefix, mapping.vision_tensors(vision.has_class_token), shapes, dtype)


def import_llava(hf_dir: str | Path, dtype: np.dtype | None) -> tuple[VLMConfig, Params]:
    hf_dir = Path(hf_dir)
    hf = read_json(hf_dir / "config.json")
    if hf.get("model_type") != "llava":
        raise CheckpointError(f"{hf_dir / 'config.json'}: unsupported model_type "
                              f"{hf.get('model_type')!r}; --hf_dir takes a LLaVA folder "
                              "(model_type 'llava'); use --llm_dir/--vision_dir to assemble one")
    st = SafetensorsFolder(hf_dir)
    act = hf.get("projector_hidden_act", "gelu")
    if act not in ("gelu", "linear"):
        raise CheckpointError(f"{hf_dir}: unsupported projector_hidden_act {act!r} "
                              "(supported: gelu = mlp2x_gelu, linear = a linear connector)")
    layer = hf.get("vision_feature_layer", -2)
    cfg = VLMConfig(
        text=LlamaConfig.from_hf(hf["text_config"]),
        vision=VisionConfig.from_hf(hf["vision_config"]),
        connector="mlp2x_gelu" if act == "gelu" else "linear",
        connector_bias=hf.get("multimodal_projector_bias", True),
        image_token_id=hf.get("image_token_id", hf.get("image_token_index")),
        vision_feature_layer=tuple(layer) if isinstance(layer, list) else layer,
        vision_feature_select_strategy=hf.get("vision_feature_select_strategy", "default"),
        eos_token_ids=_eos_ids(_optional_json(hf_dir / "generation_config.json"),
                               hf["text_config"], hf),
        pad_token_id=hf.get("pad_token_id", hf["text_config"].get("pad_token_id")),
    )
    shapes = _abstract_shapes(cfg)
    params = {
        "language_model": _read_llm(st, cfg.text, shapes["language_model"], dtype,
                                    mapping.LLM_PREFIXES, mapping.LM_HEAD_PREFIXES),
        "vision_tower": _read_vision(st, cfg.vision, shapes["vision_tower"], dtype),
        "connector": _read_connector(st, cfg, dtype),
    }
    return cfg, {k: _nest(v) for k, v in params.items()}


def _read_connector(st: SafetensorsFolder, cfg: VLMConfig, dtype) -> dict:
    """transformers' projector; a ``linear``-activation one (how `export` writes a linear
    connector) is folded back into one linear layer."""
    prefix = st.find_prefix(mapping.CONNECTOR_PREFIXES, mapping.PROBES["connector"], "projector")
    vision_dim = cfg.vision.hidden_size * len(cfg.feature_layers)
    d = cfg.text.hidden_size
    shapes = {("linear_1", "kernel"): (vision_dim, d), ("linear_1", "bias"): (d,),
              ("linear_2", "kernel"): (d, d), ("linear_2", "bias"): (d,)}
    mlp = read_part(st, prefix, mapping.connector_tensors("mlp2x_gelu", cfg.connector_bias),
                    shapes, dtype)
    if cfg.connector == "mlp2x_gelu":
        return mlp
    w1, w2 = (mlp[(n, "kernel")].astype(np.float64) for n in ("linear_1", "linear_2"))
    out = {("linear_1", "kernel"): (w1 @ w2).astype(mlp[("linear_1", "kernel")].dtype)}
    if cfg.connector_bias:
        b = mlp[("linear_1", "bias")].astype(np.float64) @ w2 + mlp[("linear_2", "bias")]
        out[("linear_1", "bias")] = b.astype(mlp[("linear_1", "bias")].dtype)
    return out


def assemble(llm_dir: str | Path, vision_dir: str | Path, projector: str,
             dtype: np.dtype | None, seed: int = 0) -> tuple[VLMConfig, Params, Any]:
    """A new VLM: LLM + vision tower as they are, connector initialised from ``seed``.

    Returns the config, the parameters and the processor (tokenizer with ``<image>`` added, the
    vision folder's image processor, a chat template that accepts image contents).
    """
    from transformers import AutoImageProcessor, AutoTokenizer, LlavaProcessor

    if projector not in CONNECTORS:
        raise CheckpointError(f"--projector must be one of {CONNECTORS}, got {projector!r}")
    llm_dir, vision_dir = Path(llm_dir), Path(vision_dir)
    llm_hf = read_json(llm_dir / "config.json")
    try:
        text = LlamaConfig.from_hf(llm_hf)
        vision = VisionConfig.from_hf(read_json(vision_dir / "config.json"))
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    llm_st, vision_st = SafetensorsFolder(llm_dir), SafetensorsFolder(vision_dir)

    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vocab = max(text.vocab_size, -(-(image_token_id + 1) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
                if image_token_id >= text.vocab_size else text.vocab_size)
    strategy = "default" if vision.has_class_token else "full"
    cfg = VLMConfig(
        text=text, vision=vision, connector=projector, image_token_id=image_token_id,
        vision_feature_layer=-2, vision_feature_select_strategy=strategy,
        eos_token_ids=_eos_ids(_optional_json(llm_dir / "generation_config.json"), llm_hf,
                               {"eos_token_id": tokenizer.eos_token_id}),
        pad_token_id=llm_hf.get("pad_token_id", tokenizer.pad_token_id),
    )
    shapes = _abstract_shapes(cfg)
    llm = _read_llm(llm_st, text, shapes["language_model"], dtype, ("model.", ""), ("",))
    if vocab > text.vocab_size:
        llm = _grow_vocab(llm, vocab)
        cfg = VLMConfig(**{**cfg.__dict__, "text": LlamaConfig(**{**text.__dict__,
                                                                    "vocab_size": vocab})})
    connector = Connector(projector, vision.hidden_size, text.hidden_size, use_bias=True,
                          rngs=nnx.Rngs(seed))
    connector_params = jax.tree.map(np.asarray, nnx.state(connector, nnx.Param).to_pure_dict())
    if dtype is not None:
        connector_params = jax.tree.map(lambda a: a.astype(dtype), connector_params)
    params = {"language_model": _nest(llm),
              "vision_tower": _nest(_read_vision(vision_st, vision, shapes["vision_tower"], dtype)),
              "connector": connector_params}

    template = tokenizer.chat_template
    if template:
        template = LIST_CONTENT_PRELUDE + template
        tokenizer.chat_template = template
    processor = LlavaProcessor(
        image_processor=AutoImageProcessor.from_pretrained(str(vision_dir), use_fast=False),
        tokenizer=tokenizer, patch_size=vision.patch_size,
        vision_feature_select_strategy=strategy, image_token=IMAGE_TOKEN,
        num_additional_image_tokens=int(vision.has_class_token), chat_template=template)
    return cfg, params, processor


def _grow_vocab(llm: dict[tuple[str, ...], np.ndarray], vocab: int) -> dict:
    """New rows (the image token and padding) start at the mean of the existing rows, as
    transformers' ``resize_token_embeddings`` does."""
    def grow(table: np.ndarray, axis: int) -> np.ndarray:
        mean = table.astype(np.float32).mean(axis=axis, keepdims=True).astype(table.dtype)
        extra = np.repeat(mean, vocab - table.shape[axis], axis=axis)
        return np.concatenate([table, extra], axis=axis)

    llm = dict(llm)
    llm[("embed_tokens",)] = grow(llm[("embed_tokens",)], 0)
    if ("lm_head", "kernel") in llm:
        llm[("lm_head", "kernel")] = grow(llm[("lm_head", "kernel")], 1)
    return llm


def copy_assets(src: str | Path, dst: str | Path) -> None:
    """Copies tokenizer, processor, chat template and generation config files as they are."""
    for pattern in ASSET_PATTERNS:
        for path in Path(src).glob(pattern):
            if path.is_file():
                shutil.copy2(path, Path(dst) / path.name)
