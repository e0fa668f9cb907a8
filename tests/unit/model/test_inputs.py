"""Prompt/response encoding, image loading and the chat-message reader."""

import io
import json

import numpy as np
import pytest

from mrm_ray.model.inputs import as_messages, load_image, response_text
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
    with pytest.raises(ValueError, match="2 image placeholders but 1"):
        as_messages(msgs, 1)


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
