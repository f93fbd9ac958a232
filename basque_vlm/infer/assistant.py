"""Ask a checkpoint questions from Python (notebooks, scripts): load it once, then ask many
questions about images, or hold a multi-turn conversation.

    from basque_vlm.data.image import open_image

    assistant = Assistant("ckpt/latxa-clip")
    assistant.answer("Zer kolore du zirkuluak?", open_image("scene.png"))["text"]
    chat = assistant.chat(open_image("scene.png"))
    chat.ask("Zer dago irudian?"); chat.ask("Eta zer kolore du?")

``answer`` renders one user message exactly as the ``generate`` CLI does (the same tokens, the same
greedy answer). A conversation puts the image in its first user message; every later turn
re-renders the whole conversation, earlier answers included, with the checkpoint's chat template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh
from PIL import Image

from basque_vlm.infer import decode, placement
from basque_vlm.infer.prompts import chat_inputs, conversation_inputs
from basque_vlm.store import checkpoint

DTYPES = ("auto", "float32", "bfloat16")


def complete(model: Any, processor: Any, inputs: dict, *, max_new_tokens: int = 64,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
             mesh: Mesh | None = None) -> dict:
    """Generates from one prompt's model inputs (``chat_inputs``/``conversation_inputs``) with
    ``model`` (placed on ``mesh``, if given): ``{"text": answer, "token_ids": generated ids up
    to and including the end of turn}``."""
    tokens = decode.generate(model, inputs["input_ids"], inputs["attention_mask"],
                             inputs.get("pixel_values"), max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, rng=jax.random.key(seed),
                             mesh=mesh)
    ids = decode.trim(tokens, model.cfg.eos_token_ids)[0]
    tokenizer = getattr(processor, "tokenizer", processor)
    return {"text": tokenizer.decode(ids, skip_special_tokens=True), "token_ids": ids}


class Assistant:
    """A checkpoint (or a training workdir: its latest step) with its processor, loaded once.

    ``dtype``: ``auto`` keeps the stored weights and compute dtype on CPU and uses bfloat16 for
    both on a GPU or TPU (an 8B model then needs about 16 GB of device memory); ``float32`` or
    ``bfloat16`` force one. ``scan_layers=True`` compiles several times faster for one prompt at
    a time. The weights are read straight onto ``mesh`` (default: `placement.decode_mesh`'s
    choice over every device: split over ``tensor`` when they do not fit one). Generation
    options (``max_new_tokens``, ``temperature``, ``top_p``, ``seed``) given
    here are the defaults of every call.
    """

    def __init__(self, ckpt: str | Path, *, dtype: str = "auto", scan_layers: bool = True,
                 mesh: Mesh | None = None, **options: Any):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if dtype == "auto":
            dtype = "bfloat16" if jax.default_backend() in ("gpu", "tpu") else None
        self.ckpt = Path(ckpt)
        overrides = {"scan_layers": scan_layers, **({"dtype": dtype} if dtype else {})}
        cfg = checkpoint.load_config(ckpt, **overrides)  # a clear error before the slow loads
        self.processor = checkpoint.load_processor(ckpt)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.mesh = mesh or placement.decode_mesh(cfg, checkpoint.stored_bytes(ckpt, dtype))
        self.cfg, model = checkpoint.load_model(ckpt, dtype, self.mesh, **overrides)
        self.model = decode.for_decoding(model, fuse=self.mesh.shape["tensor"] == 1)
        self.options = {"max_new_tokens": 64, **options}

    def __repr__(self) -> str:
        params = sum(a.size for a in jax.tree.leaves(nnx.state(self.model, nnx.Param)))
        return (f"Assistant({str(self.ckpt)!r}: {params:,} parameters, "
                f"{self.cfg.text.num_layers} decoder layers, compute "
                f"{self.cfg.text.dtype}, {self.cfg.tokens_per_image} tokens per image)")

    def answer(self, prompt: str, image: Image.Image | None = None, **options: Any) -> dict:
        """One question (about ``image``), rendered as the ``generate`` CLI renders it:
        ``{"text", "token_ids"}``."""
        inputs = chat_inputs(self.processor, [prompt], None if image is None else [image])
        return complete(self.model, self.processor, inputs, mesh=self.mesh,
                        **{**self.options, **options})

    def reply(self, messages: list[dict], images: list[Image.Image] = (), **options: Any
              ) -> dict:
        """The next assistant message of a conversation (chat-template messages; see
        ``conversation_inputs``): ``{"text", "token_ids"}``."""
        inputs = conversation_inputs(self.processor, messages, images)
        return complete(self.model, self.processor, inputs, mesh=self.mesh,
                        **{**self.options, **options})

    def chat(self, image: Image.Image | None = None, **options: Any) -> Conversation:
        """A new conversation about ``image`` (or text only)."""
        return Conversation(self, image, **options)


class Conversation:
    """A multi-turn chat: each ``ask`` adds the question and the answer to the history.

    The image goes with the first question. With an image, every message is rendered with list
    content (``[{"type": "image"}, {"type": "text", ...}]`` for the first question, a text item
    for the others), which LLaVA templates need; text only, contents are strings, as ``generate``
    renders them.
    """

    def __init__(self, assistant: Assistant, image: Image.Image | None = None, **options: Any):
        self.assistant = assistant
        self.image = image
        self.options = options
        self.turns: list[tuple[str, str]] = []  # (question, answer)

    @property
    def messages(self) -> list[dict]:
        """The conversation so far as chat-template messages."""
        return self._messages(self.turns)

    def _messages(self, turns: list[tuple[str, str | None]]) -> list[dict]:
        messages = []
        for i, (question, answer) in enumerate(turns):
            if self.image is None:
                messages.append({"role": "user", "content": question})
            else:
                image = [{"type": "image"}] if i == 0 else []
                messages.append({"role": "user",
                                 "content": image + [{"type": "text", "text": question}]})
            if answer is not None:
                messages.append({"role": "assistant", "content": answer if self.image is None
                                 else [{"type": "text", "text": answer}]})
        return messages

    def ask(self, question: str, **options: Any) -> str:
        """Asks ``question`` after the conversation so far; returns (and remembers) the answer."""
        messages = self._messages([*self.turns, (question, None)])
        images = [] if self.image is None else [self.image]
        result = self.assistant.reply(messages, images, **{**self.options, **options})
        self.turns.append((question, result["text"]))
        return result["text"]

    def reset(self) -> None:
        """Forgets the questions and answers (the image stays)."""
        self.turns.clear()

    def __str__(self) -> str:
        return "\n".join(f"user: {q}\nassistant: {a}" for q, a in self.turns)
