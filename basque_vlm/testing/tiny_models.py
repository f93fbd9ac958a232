"""Tiny random Hugging Face models and tokenizers, built at test time (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch

from basque_vlm.data.conversation import IMAGE_PLACEHOLDER

SPECIAL = ["<|pad|>", "<|begin|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>",
           IMAGE_PLACEHOLDER]
# A chat template in the style of transformers' LLaVA templates: list contents with image items.
CHAT_TEMPLATE = (
    "{{ '<|begin|>' }}{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>' }}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{{ '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
CORPUS = [
    "Zer dago irudian? Katu bat dago mahai gainean.",
    "What is in the image? A cat is sitting on the table.",
    "The capital of France is Paris. Euskal Herriko hiriburua ez da Paris.",
    "Bai, ez, yes, no, one two three four five six seven eight nine ten.",
] * 20


# Llama-3's pre-tokenizer split (its tokenizer.json): newlines group with each other, not with text.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def tokenizer(vocab_size: int = 300, *, specials: list[str] = SPECIAL,
              chat_template: str = CHAT_TEMPLATE, bos: str = "<|begin|>", eos: str = "<|end|>",
              pad: str | None = "<|pad|>", split_pattern: str | None = None):
    """A byte-level BPE tokenizer trained on a bilingual scrap of text, with chat specials.

    ``split_pattern`` replaces GPT-2's pre-tokenizer regex (e.g. ``LLAMA3_PATTERN``).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if split_pattern is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split_pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                   pad_token=pad)
    fast.chat_template = chat_template
    return fast


def llama31_tokenizer():
    """A tiny tokenizer in Llama-3.1 Instruct's format: its specials, pre-tokenizer and chat
    template, ``<|eot_id|>`` as eos, no pad token, plus ``<image>``."""
    from basque_vlm.testing.chat_templates import LLAMA31, LLAMA31_SPECIALS

    return tokenizer(specials=LLAMA31_SPECIALS + [IMAGE_PLACEHOLDER], chat_template=LLAMA31,
                     bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None,
                     split_pattern=LLAMA3_PATTERN)


def llama_config(vocab_size: int, **kw):
    from transformers import LlamaConfig

    base = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=256, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                pad_token_id=0,
                rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 32})
    base.update(kw)
    return LlamaConfig(**base)


def clip_vision_config(**kw):
    from transformers import CLIPVisionConfig

    base = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                image_size=28, patch_size=7, hidden_act="quick_gelu")
    base.update(kw)
    return CLIPVisionConfig(**base)


def siglip_vision_config(**kw):
    from transformers import SiglipVisionConfig

    base = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                image_size=28, patch_size=7)
    base.update(kw)
    return SiglipVisionConfig(**base)


def image_processor(kind: str, size: int = 28):
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    if kind == "clip":
        return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size,
                                                                          "width": size})
    return SiglipImageProcessor(size={"height": size, "width": size})


def save_llava(out: Path, kind: str = "clip", strategy: str = "default", feature_layer=-2,
               seed: int = 0, **text_kw):
    """A random ``LlavaForConditionalGeneration`` with tokenizer and processor saved in ``out``."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    torch.manual_seed(seed)
    tok = tokenizer()
    vision = clip_vision_config() if kind == "clip" else siglip_vision_config()
    text = llama_config(len(tok), **text_kw)
    image_token_id = tok.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                      vision_feature_layer=feature_layer,
                      vision_feature_select_strategy=strategy, projector_hidden_act="gelu")
    model = LlavaForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    processor = LlavaProcessor(image_processor=image_processor(kind), tokenizer=tok,
                               patch_size=vision.patch_size,
                               vision_feature_select_strategy=strategy,
                               image_token=IMAGE_PLACEHOLDER,
                               num_additional_image_tokens=1 if kind == "clip" else 0,
                               chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    return model, processor


def save_llama(out: Path, seed: int = 0, **kw):
    """A random ``LlamaForCausalLM`` with its tokenizer (and chat template) saved in ``out``."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    tok = tokenizer()
    model = LlamaForCausalLM(llama_config(len(tok), **kw)).eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model, tok


def save_vision(out: Path, kind: str = "clip", seed: int = 0):
    from transformers import CLIPVisionModel, SiglipVisionModel

    torch.manual_seed(seed)
    cls = CLIPVisionModel if kind == "clip" else SiglipVisionModel
    model = cls(clip_vision_config() if kind == "clip" else siglip_vision_config()).eval()
    model.save_pretrained(out)
    image_processor(kind).save_pretrained(out)
    return model
