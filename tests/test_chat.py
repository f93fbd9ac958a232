"""Chat rendering: ids exactly as ``apply_chat_template``; loss on the replies and end of turn."""

import numpy as np
import pytest

from basque_vlm.data.chat import ChatRenderer, Example, TemplateError, choose_pad_id, collate
from basque_vlm.data.conversation import IMAGE_PLACEHOLDER, Conversation, Message
from basque_vlm.data.errors import DataError, ErrorKind
from basque_vlm.testing import tiny_models

IMAGE = IMAGE_PLACEHOLDER
# Each case: messages as (role, text); the assistant texts are the expected supervised replies.
CASES = {
    "single": [("user", "What is in the image?"), ("assistant", "A cat.")],
    "system": [("system", "You are helpful."), ("user", "Zer dago irudian?"),
               ("assistant", "Katu bat dago.")],
    "multi": [("user", "one two"), ("assistant", "three."), ("user", "four five"),
              ("assistant", "six seven"), ("user", "eight?"), ("assistant", "nine ten")],
    "image_first": [("user", f"{IMAGE}\nWhat is in the image?"), ("assistant", "A cat.")],
    "image_middle": [("user", f"What is {IMAGE} in the image?"), ("assistant", "A table.")],
    "image_end": [("user", f"What is in the image?\n{IMAGE}"), ("assistant", "Paris.")],
    "two_images": [("system", "Bai."), ("user", f"{IMAGE}\nWhat is in the image?"),
                   ("assistant", "A cat."), ("user", f"And {IMAGE}\nhere?"), ("assistant", "No.")],
}
# transformers' LLaVA templates only take list contents: images first, then the text.
LIST_ONLY = (
    "{% for m in messages %}{{ m['role'].upper() + ': ' }}"
    "{% for c in m['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}"
    "{% endfor %}{% for c in m['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ c['text'] + ' ' }}{% endfor %}{% if m['role'] == 'assistant' %}{{ '<|end|>' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT: ' }}{% endif %}")


def conversation(case, lang=None) -> Conversation:
    """``case``: a name in CASES or a list of (role, text)."""
    messages = tuple(Message(r, t) for r, t in (CASES[case] if isinstance(case, str) else case))
    images = tuple(f"{i}.jpg" for i in range(sum(m.text.count(IMAGE) for m in messages)))
    return Conversation("c", messages, images, lang)


@pytest.fixture(scope="module")
def tokenizers(smollm2_dir):
    from transformers import AutoTokenizer

    smollm2 = AutoTokenizer.from_pretrained(smollm2_dir)
    smollm2.add_tokens([IMAGE], special_tokens=True)  # its own ChatML template is kept
    return {"tiny": tiny_models.tokenizer(), "llama31": tiny_models.llama31_tokenizer(),
            "smollm2": smollm2}


# The end-of-turn token each template closes an assistant turn with.
END = {"tiny": "<|end|>", "llama31": "<|eot_id|>", "smollm2": "<|im_end|>"}


def renderer(tok, tokens_per_image=1, max_length=None):
    return ChatRenderer(tok, tok.convert_tokens_to_ids(IMAGE), tokens_per_image, max_length)


def reference_ids(tok, conv, list_content=False):
    return tok.apply_chat_template([renderer(tok)._message(m.role, m.text, list_content)
                                    for m in conv.messages], tokenize=True,
                                   return_dict=True)["input_ids"]


def supervised_runs(tok, ex: Example) -> list[str]:
    """Each contiguous run of supervised targets, decoded."""
    mask = np.concatenate([[0], ex.loss_mask, [0]])
    edges = np.flatnonzero(np.diff(mask))
    return [tok.decode(ex.targets[a:b]) for a, b in zip(edges[::2], edges[1::2])]


@pytest.mark.parametrize("name", ["tiny", "llama31", "smollm2"])
@pytest.mark.parametrize("case", list(CASES))
def test_ids_match_apply_chat_template_and_labels_are_replies(tokenizers, name, case):
    tok = tokenizers[name]
    conv = conversation(case, lang="eu")
    ex = renderer(tok).render(conv)
    assert ex.input_ids.dtype == ex.targets.dtype == ex.loss_mask.dtype == np.int32
    assert ex.input_ids.tolist() == reference_ids(tok, conv)
    assert ex.targets[:-1].tolist() == ex.input_ids[1:].tolist()
    assert ex.loss_mask[-1] == 0
    assert supervised_runs(tok, ex) == [m.text + END[name] for m in conv.messages
                                        if m.role == "assistant"]
    assert ex.num_images == len(conv.images) and ex.language == "eu"


@pytest.mark.parametrize("name", ["tiny", "llama31", "smollm2"])
def test_end_of_turn_and_pad(tokenizers, name):
    tok = tokenizers[name]
    r = renderer(tok)
    assert r.end_of_turn_ids == {tok.convert_tokens_to_ids(END[name])}
    # tiny: its own pad; Llama-3.1 has none; SmolLM2's pad is <|im_end|>, its end of turn
    expected = {"tiny": "<|pad|>", "llama31": "<|finetune_right_pad_id|>",
                "smollm2": "<|endoftext|>"}[name]
    assert r.pad_id == tok.convert_tokens_to_ids(expected)
    assert r.pad_id not in r.end_of_turn_ids


def test_image_expansion(tokenizers):
    tok = tokenizers["llama31"]
    image_id = tok.convert_tokens_to_ids(IMAGE)
    conv = conversation("two_images")
    ex = renderer(tok, tokens_per_image=5).render(conv)
    expected = []
    for t in reference_ids(tok, conv):
        expected += [t] * (5 if t == image_id else 1)
    assert ex.input_ids.tolist() == expected
    assert ex.num_images == 2
    assert not ex.loss_mask[np.flatnonzero(ex.targets == image_id)].any()
    assert supervised_runs(tok, ex) == ["A cat.<|eot_id|>", "No.<|eot_id|>"]


def test_list_only_template():
    tok = tiny_models.tokenizer(chat_template=LIST_ONLY)
    r = renderer(tok)
    assert r.list_content
    conv = conversation("two_images")
    ex = r.render(conv)
    assert ex.input_ids.tolist() == reference_ids(tok, conv, list_content=True)
    assert tok.decode(ex.input_ids).startswith("SYSTEM: Bai. USER: <image>\nWhat is")
    # no end-of-turn special right after the text: the template's trailing space is supervised
    assert supervised_runs(tok, ex) == ["A cat. <|end|>", "No. <|end|>"]


def test_trailing_user_message_is_dropped(tokenizers):
    tok = tokenizers["smollm2"]
    conv = conversation(CASES["single"] + [("user", "Why?")])
    ex = renderer(tok).render(conv)
    assert ex.input_ids.tolist() == reference_ids(tok, conversation("single"))


def test_truncation_drops_trailing_turns(tokenizers):
    tok = tokenizers["tiny"]
    image_id = tok.convert_tokens_to_ids(IMAGE)
    conv = conversation("two_images")
    full = renderer(tok, tokens_per_image=8).render(conv)
    first_turn = conversation(CASES["two_images"][:3])
    first = renderer(tok, tokens_per_image=8).render(first_turn)
    second_image = np.flatnonzero(full.input_ids == image_id)[8:]
    # every max_length from the end of the first turn up to just short of the whole sample,
    # including those that end inside the second image's span, keeps exactly the first turn
    for max_length in [len(first.input_ids), second_image[0], second_image[3] + 1,
                       len(full.input_ids) - 1]:
        ex = renderer(tok, tokens_per_image=8, max_length=max_length).render(conv)
        assert ex.input_ids.tolist() == first.input_ids.tolist()
        assert ex.num_images == 1 and (ex.input_ids == image_id).sum() == 8
        assert supervised_runs(tok, ex) == ["A cat.<|end|>"]
    ex = renderer(tok, tokens_per_image=8, max_length=len(full.input_ids)).render(conv)
    assert ex.input_ids.tolist() == full.input_ids.tolist()
    with pytest.raises(DataError) as info:
        renderer(tok, tokens_per_image=8, max_length=len(first.input_ids) - 1).render(conv)
    assert info.value.kind == ErrorKind.TOO_LONG and info.value.record_id == "c"


def test_no_supervised_token_is_a_data_error():
    # a template that never renders assistant messages leaves nothing to learn
    template = ("{% for m in messages %}{% if m['role'] != 'assistant' %}{{ '<|user|>' + "
                "m['content'] + '<|end|>' }}{% endif %}{% endfor %}")
    tok = tiny_models.tokenizer(chat_template=template)
    with pytest.raises(DataError) as info:
        renderer(tok).render(conversation("single"))
    assert info.value.kind == ErrorKind.NO_SUPERVISED


def test_prefix_unstable_template_fails_loudly():
    # the last message is rendered differently from the earlier ones
    template = ("{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] }}"
                "{% if not loop.last %}{{ '<|end|>' }}{% endif %}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
    with pytest.raises(TemplateError, match="not prefix-stable"):
        renderer(tiny_models.tokenizer(chat_template=template))


def test_placeholder_must_be_the_image_token():
    tok = tiny_models.tokenizer()
    with pytest.raises(ValueError, match="image token"):
        ChatRenderer(tok, tok.convert_tokens_to_ids(IMAGE) + 1, 4)


def test_choose_pad_id_without_candidates():
    class Tok:
        pad_token_id = 2
        added_tokens_decoder = {}

    with pytest.raises(ValueError, match="no pad token"):
        choose_pad_id(Tok(), frozenset({2}), 3)


def test_collate(tokenizers):
    tok = tokenizers["smollm2"]
    r = renderer(tok, tokens_per_image=3)
    examples = [r.render(conversation(c)) for c in ("single", "image_first")]
    length = max(len(e.input_ids) for e in examples) + 4
    batch = collate(examples, length, r.pad_id)
    assert {k: v.shape for k, v in batch.items()} == {
        "input_ids": (2, length), "targets": (2, length), "loss_mask": (2, length),
        "attention_mask": (2, length), "num_images": (2,)}
    assert batch["num_images"].tolist() == [0, 1]
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        assert batch["input_ids"][row, :n].tolist() == ex.input_ids.tolist()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (length - n)
        assert (batch["input_ids"][row, n:] == r.pad_id).all()
        assert (batch["targets"][row, n - 1:] == r.pad_id).all()
        assert not batch["loss_mask"][row, n - 1:].any()
        assert batch["loss_mask"][row].sum() == ex.loss_mask.sum() > 0
    with pytest.raises(ValueError, match="more than the batch length"):
        collate(examples, length - 5, r.pad_id)
