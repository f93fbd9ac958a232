"""The paper's architectures, for planning without the weights (`basque_vlm.aot`).

The 8B VLMs are what ``convert --llm_dir=... --vision_dir=clip-vit-large-patch14-336
--projector=linear`` makes of the published Hugging Face configs below: Llama-3.1's tokenizer has
128,256 tokens, so the added ``<image>`` token (id 128256) grows the vocabulary to the next
multiple of 64. The 70B models (the paper's translator, Latxa-Llama-3.1-70B-Instruct, and
Llama-3.1-70B-Instruct) are language models alone, as ``convert --llm_dir`` makes them.
"""

from __future__ import annotations

from basque_vlm.model.llama import LlamaConfig
from basque_vlm.model.vision import VisionConfig
from basque_vlm.model.vlm import VLMConfig

# meta-llama/Llama-3.1-8B-Instruct (and HiTZ/Latxa-Llama-3.1-8B-Instruct): config.json
LLAMA31_8B = {
    "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "hidden_act": "silu",
}
# openai/clip-vit-large-patch14-336: vision_config
CLIP_L14_336 = {
    "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
    "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
    "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu",
}
# meta-llama/Llama-3.1-70B-Instruct (and HiTZ/Latxa-Llama-3.1-70B-Instruct): config.json
LLAMA31_70B = {**LLAMA31_8B, "hidden_size": 8192, "intermediate_size": 28672,
               "num_hidden_layers": 80, "num_attention_heads": 64}
LLAMA3_EOS = (128001, 128008, 128009)  # <|end_of_text|>, <|eom_id|>, <|eot_id|>
PAPER = {
    # name: (pad token id)
    "llama31_8b": None,
    "latxa31_8b": 128001,  # Latxa pads with <|end_of_text|>
}
TEXT_ONLY = {"llama31_70b": None, "latxa31_70b": 128001}
KNOWN = (*PAPER, *TEXT_ONLY)


def architecture(name: str) -> VLMConfig:
    """A known architecture by name (`KNOWN`)."""
    if name in TEXT_ONLY:
        return VLMConfig(text=LlamaConfig.from_hf(LLAMA31_70B), vision=None, connector="linear",
                         image_token_id=-1, eos_token_ids=LLAMA3_EOS,
                         pad_token_id=TEXT_ONLY[name])
    return paper_vlm(name)


def paper_vlm(name: str) -> VLMConfig:
    """``llama31_8b`` or ``latxa31_8b``: Llama-3.1-8B + CLIP ViT-L/14-336 + a linear connector."""
    if name not in PAPER:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(KNOWN)}")
    image_token = LLAMA31_8B["vocab_size"]
    vocab = -(-(image_token + 1) // 64) * 64
    text = LlamaConfig.from_hf({**LLAMA31_8B, "vocab_size": vocab})
    return VLMConfig(text=text, vision=VisionConfig.from_hf(CLIP_L14_336), connector="linear",
                     image_token_id=image_token, vision_feature_layer=-2,
                     vision_feature_select_strategy="default", eos_token_ids=LLAMA3_EOS,
                     pad_token_id=PAPER[name])
