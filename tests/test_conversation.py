"""The conversation schema: both formats normalised; every validation error kind, located."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from basque_vlm.data import records
from basque_vlm.data.conversation import (Conversation, Message, check_images, from_record,
                                          read_conversations)
from basque_vlm.data.errors import DataError, ErrorKind

LLAVA = {"id": 7, "image": "cat.jpg", "conversations": [
    {"from": "system", "value": "Be brief."},
    {"from": "human", "value": "<image>\nZer dago irudian?"},
    {"from": "gpt", "value": "Katu bat."}]}


def llava(**changes):
    return {**LLAVA, **changes}


def turns(*pairs):
    return [{"from": f, "value": v} for f, v in pairs]


def test_llava_record():
    conv = from_record(LLAVA)
    assert conv == Conversation("7", (Message("system", "Be brief."),
                                      Message("user", "<image>\nZer dago irudian?"),
                                      Message("assistant", "Katu bat.")), ("cat.jpg",))
    two = from_record(llava(image=["a.png", "b.png"], conversations=turns(
        ("human", "<image> and <image>?"), ("gpt", "Two."))))
    assert two.images == ("a.png", "b.png")
    text_only = from_record({"id": "t", "lang": "eu", "conversations": turns(
        ("human", "Kaixo"), ("gpt", "Kaixo!"))})
    assert text_only.images == () and text_only.lang == "eu"


def test_openai_record():
    conv = from_record({"id": "m", "images": ["x.jpg", "y.jpg"], "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Compare"},
                                     {"type": "image", "note": "ignored"}]},
        {"role": "assistant", "content": "Same."},
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Colour."}]}]})
    # an image item is "<image>\n", as the checkpoint's template renders list contents
    assert [m.text for m in conv.messages] == ["<image>\nCompare<image>\n", "Same.", "Why?",
                                               "Colour."]
    assert [m.role for m in conv.messages] == ["user", "assistant", "user", "assistant"]
    assert conv.images == ("x.jpg", "y.jpg")


@pytest.mark.parametrize("record, kind", [
    ([1, 2], ErrorKind.MALFORMED),
    (llava(messages=[]), ErrorKind.MALFORMED),
    ({"id": 7}, ErrorKind.MALFORMED),
    (llava(conversations=[{"from": "human"}]), ErrorKind.MALFORMED),
    (llava(image=3), ErrorKind.MALFORMED),
    ({"id": 7, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
     ErrorKind.MALFORMED),
    (llava(conversations=turns(("human", "<image>hi"), ("bot", "x"))), ErrorKind.UNKNOWN_ROLE),
    ({"id": 7, "messages": [{"role": "tool", "content": "x"}]}, ErrorKind.UNKNOWN_ROLE),
    (llava(conversations=turns(("gpt", "x"), ("human", "<image>y"))), ErrorKind.BAD_ORDER),
    (llava(conversations=turns(("human", "<image> hi"))), ErrorKind.NO_ASSISTANT),
    (llava(conversations=turns(("human", "<image>?"), ("gpt", " \n"))), ErrorKind.EMPTY_TEXT),
    (llava(conversations=turns(("human", "<image>"), ("gpt", "<image>"))), ErrorKind.EMPTY_TEXT),
    (llava(image=None, conversations=turns(("human", "  "), ("gpt", "x"))), ErrorKind.EMPTY_TEXT),
    (llava(conversations=turns(("human", "hi"), ("gpt", "x"))), ErrorKind.IMAGE_COUNT),
    (llava(conversations=turns(("human", "<image><image>"), ("gpt", "x"))),
     ErrorKind.IMAGE_COUNT),
])
def test_validation_errors(record, kind):
    with pytest.raises(DataError) as info:
        from_record(record, line=12)
    err = info.value
    assert err.kind == kind and err.line == 12
    if isinstance(record, dict):
        assert err.record_id == "7"
        assert "record '7'" in str(err) and f"[{kind}]" in str(err)
    assert "\n" not in str(err)


def test_image_only_user_message_is_not_empty():
    from_record(llava(conversations=turns(("human", "<image>"), ("gpt", "A cat."))))


def test_record_without_id_is_named_by_line():
    record = {"conversations": turns(("human", "hi"), ("gpt", "x"))}
    assert from_record(record, line=3).id == "line-3"
    with pytest.raises(DataError, match="no 'id'"):
        from_record(record)


def test_jsonl_stream_reports_bad_lines_and_goes_on(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = [json.dumps(LLAVA), "{not json", "", json.dumps(llava(id="b", image="nope.jpg")),
             json.dumps(llava(id="c", conversations=turns(("human", "<image>"))))]
    path.write_text("\n".join(lines) + "\n")
    out = list(read_conversations(path))
    assert [o.id if isinstance(o, Conversation) else (o.kind, o.line, o.record_id)
            for o in out] == ["7", (ErrorKind.INVALID_JSON, 2, None), "b",
                              (ErrorKind.NO_ASSISTANT, 5, "c")]
    assert "line 2" in str(out[1])


@pytest.mark.parametrize("chunk", [5, 1 << 20])
def test_json_list_streams_across_chunks(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(records, "CHUNK", chunk)  # tiny chunks cut values mid-way
    path = tmp_path / "data.json"
    items = [LLAVA, llava(id="b\n\u00e9"), "not a record", llava(id="d")]
    path.write_text("  [\n" + ",\n\n".join(json.dumps(i, indent=1) for i in items) + "\n]\n")
    out = list(read_conversations(path))
    assert [o.id if isinstance(o, Conversation) else o.kind for o in out] == [
        "7", "b\n\u00e9", ErrorKind.MALFORMED, "d"]
    text = path.read_text()
    starts = [text.count("\n", 0, text.index(json.dumps(i, indent=1))) + 1 for i in items]
    assert out[2].line == starts[2]
    assert [line for line, _ in records.read_json_records(path)] == starts


@pytest.mark.parametrize("text, line", [
    ('[\n{"id": 1},\n{"id": 2,\n "x": }\n]', 4),   # a broken value
    ('[\n{"id": 1}\n{"id": 2}]', 3),              # a missing comma
    ('[\n{"id": 1},\n', 3),                       # cut short
])
def test_json_list_syntax_error_ends_stream(tmp_path, monkeypatch, text, line):
    monkeypatch.setattr(records, "CHUNK", 4)
    path = tmp_path / "data.json"
    path.write_text(text)
    *good, err = list(records.read_json_records(path))
    assert good == [(2, {"id": 1})]
    assert err.kind == ErrorKind.INVALID_JSON and err.line == line


def test_empty_json_list(tmp_path):
    (tmp_path / "e.json").write_text(" [ ] ")
    assert list(read_conversations(tmp_path / "e.json")) == []


def test_check_images(tmp_path):
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:600])
    conv = lambda *images: Conversation("r", (), images)  # noqa: E731
    assert check_images(conv("ok.png", str(tmp_path / "ok.png")), tmp_path) == [
        tmp_path / "ok.png"] * 2
    for images, kind in [(("ok.png", "gone.png"), ErrorKind.MISSING_IMAGE),
                         (("bad.jpg",), ErrorKind.BAD_IMAGE), (("cut.jpg",), ErrorKind.BAD_IMAGE)]:
        with pytest.raises(DataError) as info:
            check_images(conv(*images), tmp_path)
        assert info.value.kind == kind and info.value.record_id == "r"
        assert "\n" not in str(info.value)
