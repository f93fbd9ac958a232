"""Hugging Face folders → project parameters and config.

Two ways in: a ``LlavaForConditionalGeneration`` folder, or a Llama-family LLM folder plus a
CLIP/SigLIP folder assembled into a new VLM with a freshly initialised connector.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from basque_vlm.data.conversation import IMAGE_PLACEHOLDER
from basque_vlm.hf import mapping
from basque_vlm.hf.reader import (CheckpointError, Part, SafetensorsFolder, check_part, read_json,
                                  read_part)
from basque_vlm.model.connector import CONNECTORS
from basque_vlm.model.llama import LlamaConfig
from basque_vlm.model.vision import VisionConfig
from basque_vlm.model.vlm import Params, VLMConfig
from basque_vlm.runtime import paths

VOCAB_MULTIPLE = 64  # a grown vocabulary is padded so that it still shards evenly
VOCAB_TABLES = (("embed_tokens",), ("lm_head", "kernel"))
INIT_STD = 0.02  # layers.Linear's
ASSET_PATTERNS = paths.ASSET_PATTERNS

# Lets a text-only chat template render LLaVA's list contents: each image item becomes the image
# placeholder and a newline (LLaVA's "<image>\n{question}"), text items their text.
LIST_CONTENT_PRELUDE = (
    "{%- set _msgs = namespace(items=[]) -%}"
    "{%- for _m in messages -%}"
    "{%- if _m['content'] is string -%}{%- set _msgs.items = _msgs.items + [_m] -%}"
    "{%- else -%}{%- set _text = namespace(s='') -%}"
    "{%- for _c in _m['content'] -%}"
    "{%- if _c['type'] == 'image' -%}{%- set _text.s = _text.s + '" + IMAGE_PLACEHOLDER + "\\n' -%}"
    "{%- elif _c['type'] == 'text' -%}{%- set _text.s = _text.s + _c['text'] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- set _msgs.items = _msgs.items + [{'role': _m['role'], 'content': _text.s}] -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- set messages = _msgs.items -%}")

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _abstract_shapes(cfg: VLMConfig) -> dict[str, dict[tuple[str, ...], tuple[int, ...]]]:
    from basque_vlm.store.checkpoint import abstract_model

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


def _read_config(path: Path, parse: Callable[[dict[str, Any]], Any]) -> Any:
    """``parse(config)``, with a missing key or a bad value reported against the file."""
    hf = read_json(path)
    try:
        return parse(hf)
    except KeyError as e:
        raise CheckpointError(f"{path}: missing key {e}") from None
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def _llm_part(st: SafetensorsFolder, text: LlamaConfig, shapes, prefixes, head_prefixes) -> Part:
    prefix = st.find_prefix(prefixes, mapping.PROBES["llm"], "language model")
    root = "" if text.tie_word_embeddings else st.find_prefix(
        head_prefixes, mapping.PROBES["lm_head"], "lm_head")
    tensors = mapping.llama_tensors(text.tie_word_embeddings, text.attention_bias, text.mlp_bias)
    return Part(st, prefix, tensors, shapes, root)


def _vision_part(st: SafetensorsFolder, vision: VisionConfig, shapes) -> Part:
    prefix = st.find_prefix(mapping.VISION_PREFIXES, mapping.PROBES["vision"], "vision tower")
    return Part(st, prefix, mapping.vision_tensors(vision.has_class_token), shapes)


def _connector_part(st: SafetensorsFolder, cfg: VLMConfig) -> Part:
    """transformers' projector, always two layers (see `_read_connector`)."""
    prefix = st.find_prefix(mapping.CONNECTOR_PREFIXES, mapping.PROBES["connector"], "projector")
    vision_dim = cfg.vision.hidden_size * len(cfg.feature_layers)
    d = cfg.text.hidden_size
    shapes = {("linear_1", "kernel"): (vision_dim, d), ("linear_1", "bias"): (d,),
              ("linear_2", "kernel"): (d, d), ("linear_2", "bias"): (d,)}
    return Part(st, prefix, mapping.connector_tensors("mlp2x_gelu", cfg.connector_bias), shapes)


def _read_llm(part: Part, text: LlamaConfig, dtype, log: Log, vocab: int | None = None):
    """The decoder's arrays; a ``vocab`` above the checkpoint's grows the token tables. The tables
    are read (and grown, which copies them) first, while little else is in memory."""
    log(f"reading the language model ({text.num_layers} layers) from {part.folder.folder}")
    out = read_part(part.select(lambda t: t.path in VOCAB_TABLES), dtype)
    if vocab is not None and vocab > text.vocab_size:
        log(f"growing the vocabulary from {text.vocab_size} to {vocab} for {IMAGE_PLACEHOLDER}")
        _grow_vocab(out, vocab)
    out.update(read_part(part.select(lambda t: t.path not in VOCAB_TABLES), dtype))
    return out


def _read_vision(part: Part, vision: VisionConfig, dtype, log: Log):
    log(f"reading the {vision.kind} vision tower ({vision.num_layers} layers) from "
        f"{part.folder.folder}")
    return read_part(part, dtype)


def _read_connector(part: Part, cfg: VLMConfig, dtype, log: Log) -> dict:
    """A ``linear``-activation projector (how `export` writes a linear connector) is folded back
    into one linear layer."""
    log(f"reading the projector ({cfg.connector}) from {part.folder.folder}")
    mlp = read_part(part, dtype)
    if cfg.connector == "mlp2x_gelu":
        return mlp
    w1, w2 = (mlp[(n, "kernel")].astype(np.float64) for n in ("linear_1", "linear_2"))
    out = {("linear_1", "kernel"): (w1 @ w2).astype(mlp[("linear_1", "kernel")].dtype)}
    if cfg.connector_bias:
        b = mlp[("linear_1", "bias")].astype(np.float64) @ w2 + mlp[("linear_2", "bias")]
        out[("linear_1", "bias")] = b.astype(mlp[("linear_1", "bias")].dtype)
    return out


def _llava_config(hf: dict[str, Any], generation: dict[str, Any]) -> VLMConfig:
    if hf.get("model_type") != "llava":
        raise ValueError(f"unsupported model_type {hf.get('model_type')!r}; --hf_dir takes a "
                         "LLaVA folder (model_type 'llava'); use --llm_dir/--vision_dir to "
                         "assemble one")
    act = hf.get("projector_hidden_act", "gelu")
    if act not in ("gelu", "linear"):
        raise ValueError(f"unsupported projector_hidden_act {act!r} "
                         "(supported: gelu = mlp2x_gelu, linear = a linear connector)")
    layer = hf.get("vision_feature_layer", -2)
    return VLMConfig(
        text=LlamaConfig.from_hf(hf["text_config"]),
        vision=VisionConfig.from_hf(hf["vision_config"]),
        connector="mlp2x_gelu" if act == "gelu" else "linear",
        connector_bias=hf.get("multimodal_projector_bias", True),
        image_token_id=hf.get("image_token_id", hf.get("image_token_index", 32000)),  # as HF
        vision_feature_layer=tuple(layer) if isinstance(layer, list) else layer,
        vision_feature_select_strategy=hf.get("vision_feature_select_strategy", "default"),
        eos_token_ids=_eos_ids(generation, hf["text_config"], hf),
        pad_token_id=hf.get("pad_token_id", hf["text_config"].get("pad_token_id")),
    )


def _llava_parts(hf_dir: str | Path) -> tuple[VLMConfig, dict[str, Part]]:
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise CheckpointError(f"{hf_dir}: not a directory")
    generation = _optional_json(hf_dir / "generation_config.json")
    cfg = _read_config(hf_dir / "config.json", lambda hf: _llava_config(hf, generation))
    st = SafetensorsFolder(hf_dir)
    shapes = _abstract_shapes(cfg)
    parts = {"language_model": _llm_part(st, cfg.text, shapes["language_model"],
                                         mapping.LLM_PREFIXES, mapping.LM_HEAD_PREFIXES),
             "vision_tower": _vision_part(st, cfg.vision, shapes["vision_tower"]),
             "connector": _connector_part(st, cfg)}
    for part in parts.values():
        check_part(part)
    return cfg, parts


def check_llava(hf_dir: str | Path) -> VLMConfig:
    """The config of a ``LlavaForConditionalGeneration`` folder, once its config and every
    tensor's name, dtype and shape are checked (file headers only: fast at any size)."""
    return _llava_parts(hf_dir)[0]


def import_llava(hf_dir: str | Path, dtype: np.dtype | None, log: Log = _quiet
                 ) -> tuple[VLMConfig, Params]:
    """A ``LlavaForConditionalGeneration`` folder → config and parameters (``dtype`` None keeps
    the stored dtype)."""
    cfg, parts = _llava_parts(hf_dir)
    params = {
        "language_model": _read_llm(parts["language_model"], cfg.text, dtype, log),
        "vision_tower": _read_vision(parts["vision_tower"], cfg.vision, dtype, log),
        "connector": _read_connector(parts["connector"], cfg, dtype, log),
    }
    return cfg, {k: _nest(v) for k, v in params.items()}


def assemble(llm_dir: str | Path, vision_dir: str | Path, projector: str,
             dtype: np.dtype | None, seed: int = 0, log: Log = _quiet
             ) -> tuple[VLMConfig, Params, Any]:
    """A new VLM: LLM + vision tower as they are, connector initialised from ``seed``.

    Returns the config, the parameters and the processor (tokenizer with ``<image>`` added, the
    vision folder's image processor, a chat template that accepts image contents).
    """
    if projector not in CONNECTORS:
        raise CheckpointError(f"--projector must be one of {CONNECTORS}, got {projector!r}")
    llm_dir, vision_dir = Path(llm_dir), Path(vision_dir)
    for folder in (llm_dir, vision_dir):
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: not a directory")
    llm_hf = read_json(llm_dir / "config.json")
    text = _read_config(llm_dir / "config.json", LlamaConfig.from_hf)
    vision = _read_config(vision_dir / "config.json", VisionConfig.from_hf)
    strategy = "default" if vision.has_class_token else "full"
    # The weights' layout does not depend on the tokenizer: check them before loading it.
    cfg = VLMConfig(text=text, vision=vision, connector=projector, image_token_id=-1,
                    vision_feature_layer=-2, vision_feature_select_strategy=strategy)
    shapes = _abstract_shapes(cfg)
    llm_part = _llm_part(SafetensorsFolder(llm_dir), text, shapes["language_model"],
                         ("model.", ""), ("",))
    vision_part = _vision_part(SafetensorsFolder(vision_dir), vision, shapes["vision_tower"])
    check_part(llm_part)
    check_part(vision_part)

    from transformers import AutoImageProcessor, AutoTokenizer, LlavaProcessor  # slow to import

    log(f"loading the tokenizer from {llm_dir} and the image processor from {vision_dir}")
    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
    if not tokenizer.chat_template:
        raise CheckpointError(f"{llm_dir}: the tokenizer has no chat template; add one "
                              "(chat_template.jinja or tokenizer_config.json's chat_template)")
    image_processor = AutoImageProcessor.from_pretrained(str(vision_dir), backend="pil")
    if IMAGE_PLACEHOLDER not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_PLACEHOLDER], special_tokens=True)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    vocab = text.vocab_size
    if image_token_id >= vocab:
        vocab = -(-(image_token_id + 1) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    cfg = dataclasses.replace(
        cfg, text=dataclasses.replace(text, vocab_size=vocab), image_token_id=image_token_id,
        eos_token_ids=_eos_ids(_optional_json(llm_dir / "generation_config.json"), llm_hf,
                               {"eos_token_id": tokenizer.eos_token_id}),
        pad_token_id=llm_hf.get("pad_token_id", tokenizer.pad_token_id))

    llm = _read_llm(llm_part, text, dtype, log, vocab)
    vision_params = _read_vision(vision_part, vision, dtype, log)
    log(f"initialising the {projector} connector (seed {seed})")
    params = {"language_model": _nest(llm), "vision_tower": _nest(vision_params),
              "connector": _init_connector(shapes["connector"], seed, dtype)}

    template = LIST_CONTENT_PRELUDE + tokenizer.chat_template
    tokenizer.chat_template = template
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=vision.patch_size,
        vision_feature_select_strategy=strategy, image_token=IMAGE_PLACEHOLDER,
        num_additional_image_tokens=int(vision.has_class_token), chat_template=template)
    return cfg, params, processor


def import_llm(llm_dir: str | Path, dtype: np.dtype | None, log: Log = _quiet
               ) -> tuple[VLMConfig, Params, Any]:
    """A language model alone (text only: no vision tower), as it is: the config, the
    parameters and the tokenizer (with its chat template)."""
    llm_dir = Path(llm_dir)
    if not llm_dir.is_dir():
        raise CheckpointError(f"{llm_dir}: not a directory")
    llm_hf = read_json(llm_dir / "config.json")
    text = _read_config(llm_dir / "config.json", LlamaConfig.from_hf)
    cfg = VLMConfig(text=text, vision=None, connector="linear", image_token_id=-1)
    part = _llm_part(SafetensorsFolder(llm_dir), text, _abstract_shapes(cfg)["language_model"],
                     ("model.", ""), ("",))
    check_part(part)

    from transformers import AutoTokenizer  # slow to import

    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
    if not tokenizer.chat_template:
        raise CheckpointError(f"{llm_dir}: the tokenizer has no chat template; add one "
                              "(chat_template.jinja or tokenizer_config.json's chat_template)")
    cfg = dataclasses.replace(
        cfg, eos_token_ids=_eos_ids(_optional_json(llm_dir / "generation_config.json"), llm_hf,
                                    {"eos_token_id": tokenizer.eos_token_id}),
        pad_token_id=llm_hf.get("pad_token_id", tokenizer.pad_token_id))
    return cfg, {"language_model": _nest(_read_llm(part, text, dtype, log, None))}, tokenizer


def _init_connector(shapes: dict[tuple[str, ...], tuple[int, ...]], seed: int,
                    dtype: np.dtype | None) -> Params:
    """Fresh connector parameters as the model initialises them (kernels ~ N(0, 0.02), zero
    biases), drawn with numpy: running JAX here would keep ~0.1 GB of compiled code and buffers
    resident through the rest of a conversion."""
    rng = np.random.default_rng(seed)
    dtype = dtype or np.dtype(np.float32)
    return _nest({path: np.zeros(shape, dtype) if path[-1] == "bias" else
                  (INIT_STD * rng.standard_normal(shape, np.float32)).astype(dtype)
                  for path, shape in sorted(shapes.items())})


def _grow_vocab(llm: dict[tuple[str, ...], np.ndarray], vocab: int) -> None:
    """Adds rows (the image token and padding) at the mean of the existing rows, as transformers'
    ``resize_token_embeddings`` does; each old table is freed once replaced."""
    def grow(table: np.ndarray, axis: int) -> np.ndarray:
        mean = table.mean(axis=axis, keepdims=True, dtype=np.float32).astype(table.dtype)
        extra = np.repeat(mean, vocab - table.shape[axis], axis=axis)
        return np.concatenate([table, extra], axis=axis)

    llm[("embed_tokens",)] = grow(llm[("embed_tokens",)], 0)
    if ("lm_head", "kernel") in llm:
        llm[("lm_head", "kernel")] = grow(llm[("lm_head", "kernel")], 1)


def copy_assets(src: str | Path, dst: str | Path) -> None:
    """Copies tokenizer, processor, chat template and generation config files as they are;
    ``src`` and ``dst`` may be remote (``gs://...``)."""
    paths.copy_files(src, dst, ASSET_PATTERNS)


def load_processor(folder: str | Path) -> Any:
    """The folder's ``AutoProcessor``, which must have an image processor and a chat template."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}: cannot load the processor ({e})") from None
    if getattr(processor, "image_processor", None) is None:
        raise CheckpointError(f"{folder}: no image processor (preprocessor_config.json)")
    if not processor.chat_template:
        raise CheckpointError(f"{folder}: the processor has no chat template")
    return processor
