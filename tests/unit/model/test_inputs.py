"""Prompt/response encoding, image loading and the chat-message reader."""

import io
import json

import numpy as np
import pytest

from mrm_ray.model.inputs import (INLINE_ONLY, InvalidInput, as_messages, image_bytes, is_image_part, load_image,
                                  marker_parts, response_text)
from mrm_ray.data.quarantine import Rejected
from mrm_ray.data.readers.chat_messages import read_chat_messages
from mrm_ray.data.synthetic import image_grounded_pairs


def test_response_text_forms():
    assert response_text("plain") == "plain"
    nested = [{"role": "assistant", "content": [{"type": "text", "text": "a"},
                                                {"content": [{"text": "b"}]}]}]
    assert response_text(nested) == "ab"
    assert response_text({"from": "gpt", "value": "v"}) == "v"
    with pytest.raises(TypeError):
        response_text(3)


def test_as_messages_checks_image_count():
    msgs = as_messages("hi", 2)
    assert [p.get("type") for p in msgs[0]["content"]] == ["image", "image", "text"]
    with pytest.raises(InvalidInput, match="image mismatch: 2 image placeholders, 1 images"):
        as_messages(msgs, 1)


def test_image_markers_place_images_only_where_there_are_images():
    assert marker_parts("Compare <image> and\n<image>: which?") == [
        {"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "text", "text": " and\n"},
        {"type": "image"}, {"type": "text", "text": ": which?"}]
    (turn,) = as_messages("<image>What colour?", 1)
    assert turn["content"] == [{"type": "image"}, {"type": "text", "text": "What colour?"}]
    (turn,) = as_messages([{"role": "user", "content": "Look: <image>"}], 1)
    assert turn["content"] == [{"type": "text", "text": "Look: "}, {"type": "image"}]
    (turn,) = as_messages("Write <image> in HTML", 0)  # no images: a marker is just text
    assert turn["content"] == [{"type": "text", "text": "Write <image> in HTML"}]
    with pytest.raises(InvalidInput, match="image mismatch: 2 image placeholders, 1 images"):
        as_messages("<image> or <image>?", 1)


@pytest.mark.parametrize("part, image", [
    ({"type": "image"}, True), ({"type": "image_url", "image_url": {"url": "a.png"}}, True),
    ({"image": "a.png"}, True), ({"image_url": "data:image/png;base64,AA=="}, True),
    ({"type": "text", "text": "x", "image": None}, False),  # Parquet unifies part structs with null keys
    ({"type": "text", "text": "x"}, False), ("plain text", False)])
def test_what_counts_as_an_image_part(part, image):
    assert is_image_part(part) is image


def test_image_bytes_reads_every_inline_form_and_files_only_under_the_root(tmp_path):
    import base64

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (6, 4), "blue").save(buf, format="PNG")
    png = buf.getvalue()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "a.png").write_bytes(png)
    (tmp_path / "outside.png").write_bytes(png)
    text = base64.b64encode(png).decode()
    for given in (png, bytearray(png), {"bytes": png, "path": "ignored.png"}, {"bytes": text}, text,
                  f"data:image/png;base64,{text}", Image.open(io.BytesIO(png))):
        assert Image.open(io.BytesIO(image_bytes(given))).size == (6, 4), type(given)
    root = tmp_path / "root"
    for name in ("a.png", {"path": "a.png"}, {"type": "image_url", "image_url": {"url": "a.png"}}):
        assert image_bytes(name, root=root) == png
    for outside in ("../outside.png", str(tmp_path / "outside.png"), "http://example.invalid/a.png"):
        with pytest.raises(InvalidInput, match="image outside root"):
            image_bytes(outside, root=root)
    with pytest.raises(InvalidInput, match="missing image: b.png"):
        image_bytes("b.png", root=root)
    for no_root in (str(tmp_path / "outside.png"), "./a.png", "https://example.invalid/a.png", "file:///etc/passwd"):
        with pytest.raises(InvalidInput, match="never fetches URLs or reads paths") as refused:
            image_bytes(no_root)  # without a root nothing is ever read: the server's rule
        assert refused.value.reason == INLINE_ONLY


def test_load_image_never_opens_paths(tmp_path):
    from PIL import Image

    path = tmp_path / "x.png"
    Image.new("RGBA", (5, 5)).save(path)
    with pytest.raises(TypeError):
        load_image(str(path))
    rgb = load_image({"bytes": path.read_bytes()})
    assert rgb.mode == "RGB" and rgb.size == (5, 5)


def test_encode_pair_features(encoder, processor):
    row = next(image_grounded_pairs(1, seed=0))
    feats = encoder.encode_pair(row["prompt"], row["images"], row["chosen"], row["rejected"], margin=1.5)
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<|image_pad|>")
    n_image_tokens = int((feats["prompt_ids"] == image_id).sum())
    assert n_image_tokens == int(np.prod(feats["image_grid_thw"], axis=1).sum()) // 4
    assert np.array_equal(feats["prompt_mm_token_type_ids"] == 1, feats["prompt_ids"] == image_id)
    assert feats["pixel_values"].shape == (int(np.prod(feats["image_grid_thw"])), 3 * 2 * 14 * 14)
    assert tok.decode(feats["chosen_ids"]) == row["chosen"] + "<|im_end|>"
    assert tok.decode(feats["prompt_ids"]).endswith("<|im_start|>assistant\n")
    assert feats["margin"] == 1.5


def test_chat_message_reader_resolves_and_confines_images(tmp_path):
    from PIL import Image

    (tmp_path / "image").mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    (tmp_path / "image" / "a.png").write_bytes(buf.getvalue())
    (tmp_path / "secret.png").write_bytes(buf.getvalue())

    def row(url):
        return {"id": "x", "prompt": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "q"}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "c"}]}], "rejected": "r"}

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps(row("a.png")) + "\n")
    [pair] = read_chat_messages(data)
    assert pair["images"] == [buf.getvalue()] and pair["prompt"][0]["content"][0] == {"type": "image", "text": None}
    for bad in ("../secret.png", str(tmp_path / "secret.png"), "http://example.invalid/a.png"):
        data.write_text(json.dumps(row(bad)) + "\n")
        [rejected] = read_chat_messages(data)
        assert isinstance(rejected, Rejected) and rejected.reason.startswith("image outside root"), rejected
    data.write_text(json.dumps(row("nope.png")) + "\n")
    assert next(read_chat_messages(data)).reason == "missing image: nope.png"


def test_reads_the_real_rlaif_v_sample(shared_data, encoder):
    rows = list(read_chat_messages(shared_data / "rlaif-v-sample" / "rlaif-v.jsonl"))
    assert len(rows) == 10 and all(len(r["images"]) == 1 for r in rows)
    assert all(response_text(r["chosen"]) and response_text(r["rejected"]) for r in rows)
    feats = encoder.encode_pair(rows[0]["prompt"], rows[0]["images"], rows[0]["chosen"], rows[0]["rejected"])
    assert len(feats["chosen_ids"]) > 20
