"""A checkpoint of ours (or a training workdir: its latest step) as an lm-evaluation-harness
model, registered as ``basque_vlm``: the text-only ability of the language model inside the VLM.

    python -m basque_vlm.lm_eval --model basque_vlm --model_args checkpoint=CKPT \\
        --tasks xnli_eu,xnli_en --batch_size 16

    import basque_vlm.eval.lm_eval_model  # registers the model
    from lm_eval import simple_evaluate
    simple_evaluate(model="basque_vlm", model_args="checkpoint=CKPT", tasks=["xnli_eu"])

Requests are tokenized as lm-eval's ``hf`` backend tokenizes them, so that the same weights give
the same numbers: a context's trailing whitespace moves to its continuation, and the pair is
encoded whole and then split (`TemplateLM._encode_pair`); an empty context is the BOS token (EOS
without one); a text that starts with it gets no second one; inputs longer than ``max_length``
lose their oldest tokens. ``loglikelihood`` sums the continuation's float32 log-probabilities
(`infer.score`); ``loglikelihood_rolling`` scores the windows lm-eval cuts; ``generate_until``
decodes greedily (`infer.engine`) up to ``max_gen_toks`` tokens and cuts the text at the first
``until`` string. Prompts are the task's raw text unless lm-eval is asked to
``--apply_chat_template`` (the checkpoint's own template).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs,
                                  postprocess_generated_text)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from basque_vlm.eval.runner import Generator
from basque_vlm.infer import placement
from basque_vlm.infer.engine import Request
from basque_vlm.infer.score import next_token_scores
from basque_vlm.store.checkpoint import load_config, stored_bytes

NAME = "basque_vlm"
# As lm-eval's hf backend: the longest answer when a task does not say.
MAX_GEN_TOKS = 256

# A request tokenized: ((context, continuation) or None for a rolling window, context ids,
# continuation ids).
TokenRequest = tuple[tuple[str, str] | None, list[int], list[int]]


@register_model(NAME)
class BasqueVLM(TemplateLM):
    """``--model basque_vlm``: the language model of ``checkpoint``, on a device mesh over every
    device of every process (each process gives it the same requests)."""

    def __init__(self, checkpoint: str, batch_size: int | str = 16,
                 param_dtype: str | None = None, dtype: str | None = None,
                 scan_layers: bool | None = None, mesh_data: int | None = None,
                 mesh_fsdp: int | None = None, mesh_tensor: int | None = None,
                 batching: str = "inflight", max_length: int | None = None,
                 add_bos_token: bool | None = None, prefix_token_id: int | None = None,
                 device: str | None = None, max_batch_size: int | None = None):
        """``batch_size`` rows are scored or decoded at once; ``param_dtype`` casts the weights,
        ``dtype`` and ``scan_layers`` change how the model computes; ``mesh_*`` split the
        devices as `infer.placement.decode_mesh` says (default: the model fits); ``batching``
        is the engine's (``inflight`` or ``static``). ``max_length`` (default: the model's
        ``max_position_embeddings``), ``add_bos_token`` and ``prefix_token_id`` mean what they
        mean to lm-eval's ``hf`` model. lm-eval's command line always passes ``device`` and
        ``max_batch_size``: the devices are JAX's, so both are ignored."""
        del device, max_batch_size
        super().__init__()
        rows = _rows(batch_size)
        overrides = {k: v for k, v in (("dtype", dtype), ("scan_layers", scan_layers))
                     if v is not None}
        cfg = load_config(checkpoint, **overrides)
        mesh = placement.decode_mesh(cfg, stored_bytes(checkpoint, param_dtype), data=mesh_data,
                                     fsdp=mesh_fsdp, tensor=mesh_tensor)
        generator = Generator(checkpoint, rows, param_dtype, mesh=mesh, batching=batching,
                              **overrides)
        self._use(generator, rows, str(checkpoint), max_length, add_bos_token, prefix_token_id)

    @classmethod
    def from_generator(cls, generator: Generator, batch_size: int, name: str) -> BasqueVLM:
        """The model of a loaded ``generator`` (`eval.runner.Generator`), called ``name``."""
        lm = cls.__new__(cls)
        TemplateLM.__init__(lm)
        lm._use(generator, _rows(batch_size), name, None, None, None)
        return lm

    def _use(self, generator: Generator, batch_size: int, name: str, max_length: int | None,
             add_bos_token: bool | None, prefix_token_id: int | None) -> None:
        self.generator, self.name = generator, name
        self.tokenizer = generator.tokenizer
        self._batch_size = batch_size
        self._max_length = max_length or generator.cfg.text.max_position_embeddings
        self.add_bos_token, self.custom_prefix_token_id = add_bos_token, prefix_token_id

    # -- what lm-eval asks of a model -----------------------------------------------------

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return MAX_GEN_TOKS

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context is: the BOS token, else EOS (as lm-eval's hf model)."""
        if self.custom_prefix_token_id is not None:
            return self.custom_prefix_token_id
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    @property
    def tokenizer_name(self) -> str:
        return self.name.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs: Any) -> list[int]:
        """Token ids: special tokens (BOS) as ``add_special_tokens``, else ``add_bos_token``,
        else the tokenizer's default, unless the text already starts with the prefix token."""
        choice = add_special_tokens if add_special_tokens is not None else self.add_bos_token
        special = {} if choice is None else {"add_special_tokens": choice}
        if add_special_tokens is None and has_bos_prefix(
                string, self.tokenizer.decode(self.prefix_token_id)):
            special = {"add_special_tokens": False}
        return self.tokenizer.encode(string, **special)

    def apply_chat_template(self, chat_history: list[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        """The conversation rendered with the checkpoint's chat template (as lm-eval's hf
        model: a final assistant message is continued when no generation prompt is added)."""
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt)

    def _loglikelihood_tokens(self, requests: list[TokenRequest], disable_tqdm: bool = False
                              ) -> list[tuple[float, bool]]:
        """``(log-probability of the continuation, whether greedy decoding gives it)`` each."""
        sequences = []
        for _, context, continuation in requests:
            if not 0 < len(continuation) <= self.max_length:
                raise ValueError(f"a continuation of {len(continuation)} tokens does not fit "
                                 f"max_length={self.max_length}")
            sequences.append((context + continuation)[-(self.max_length + 1):])
        with _progress(len(requests), "loglikelihood", disable_tqdm) as progress:
            scores = next_token_scores(self.generator.model, self.generator.engine.mesh,
                                       sequences, self.batch_size, progress=progress)
        answers = []
        for (key, _, continuation), (log_probs, greedy) in zip(requests, scores):
            n = len(continuation)
            answer = float(log_probs[-n:].sum()), bool(greedy[-n:].all())
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
            answers.append(answer)
        return answers

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False
                              ) -> list[float]:
        """Each text's log-probability, scored in the windows lm-eval's hf model uses (each
        token predicted once, with as much context as ``max_length`` allows)."""
        windows: list[TokenRequest] = []
        owners = []
        for i, (text,) in enumerate(r.args for r in requests):
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, continuation))
                owners.append(i)
        totals = [0.0] * len(requests)
        for i, (log_prob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm)):
            totals[i] += log_prob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False
                       ) -> list[str]:
        """Greedy answers, at most ``max_gen_toks`` tokens each, cut before the first of the
        ``until`` strings (and the end-of-text token's text)."""
        eos = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
        prompts, stops = [], []
        for context, gen_kwargs in (r.args for r in requests):
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            if kwargs["do_sample"]:
                raise ValueError(f"the {NAME} model decodes greedily only; the task asks for "
                                 f"sampling ({gen_kwargs})")
            budget = kwargs["max_gen_toks"]
            if budget >= self.max_length:
                raise ValueError(f"max_gen_toks={budget} leaves no room for the prompt in "
                                 f"max_length={self.max_length}")
            ids = self.tok_encode(context)[-(self.max_length - budget):]
            prompts.append(Request(np.asarray(ids), budget))
            stops.append(handle_stop_sequences(kwargs["until"], eos=eos))
        with _progress(len(requests), "generate_until", disable_tqdm) as progress:
            rows = self.generator.engine.generate(prompts, self.generator.batching, progress)
        answers = []
        for request, tokens, until in zip(requests, rows, stops):
            text = postprocess_generated_text(
                self.tokenizer.decode(tokens, skip_special_tokens=True), until, None)
            self.cache_hook.add_partial("generate_until", request.args, text)
            answers.append(text)
        return answers


def _rows(batch_size: int | str) -> int:
    try:
        rows = int(batch_size)
    except ValueError:
        raise ValueError(f"{NAME}: batch_size must be a number of rows (lm-eval's 'auto' is "
                         f"not supported), got {batch_size!r}") from None
    if rows < 1:
        raise ValueError(f"{NAME}: batch_size must be >= 1, got {rows}")
    return rows


@contextlib.contextmanager
def _progress(total: int, what: str, disable: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar as lm-eval's models show one (process 0), fed the count done so far."""
    with tqdm(total=total, desc=f"Running {what} requests",
              disable=disable or jax.process_index() != 0) as bar:
        yield lambda done: bar.update(done - bar.n)
