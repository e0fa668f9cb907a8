"""Request checking in the ingress: every bad kind names its field; good inputs keep image order."""

import pytest

from mrm_ray.serve.api import (BadInput, CompareRequest, Limits, OpenRLHFRequest, ScoreRequest, openrlhf_items,
                               prepare_items, prepare_pairs)

from helpers.images import b64, data_url, huge_png, png

LIMITS = Limits(max_items=4, max_pairs=2, max_images_per_item=2, max_image_bytes=50_000,
                max_image_pixels=1_000_000, max_text_chars=100)
RED, BLUE = png((255, 0, 0)), png((0, 0, 255))


def _items(*items, **kw):
    return prepare_items(ScoreRequest(items=list(items), **kw), LIMITS)


def test_plain_prompt_with_images_and_chat_messages_with_inline_and_placeholder_images():
    plain, chat = _items(
        {"prompt": "What colour?", "response": "red", "images": [b64(RED)]},
        {"prompt": [{"role": "system", "content": "be brief"},
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(BLUE)}},
                                                 {"type": "image"}, {"type": "text", "text": "Compare."}]}],
         "response": "blue then red", "images": [data_url(RED)]})
    assert plain == {"prompt": "What colour?", "images": [RED], "response": "red"}
    assert chat["images"] == [BLUE, RED]  # inline first (its position), then the placeholder's
    assert chat["prompt"][1]["content"] == [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}]


@pytest.mark.parametrize("item, status, field, words", [
    ({"prompt": "x", "response": "y", "images": ["/etc/passwd"]}, 422, "items[0].images[0]", "never"),
    ({"prompt": "x", "response": "y", "images": ["https://example.com/a.png"]}, 422, "items[0].images[0]", "inline"),
    ({"prompt": "x", "response": "y", "images": ["file:///etc/hosts"]}, 422, "items[0].images[0]", "inline"),
    ({"prompt": "x", "response": "y", "images": ["not base64!!"]}, 422, "items[0].images[0]", "base64"),
    ({"prompt": "x", "response": "y", "images": [b64(b"\x89PNG garbage")]}, 422, "items[0].images[0]", "corrupt"),
    ({"prompt": "x", "response": "y", "images": [b64(huge_png(2000))]}, 413, "items[0].images[0]", "too large"),
    ({"prompt": "x", "response": "y", "images": [b64(b"\0" * 60_000)]}, 413, "items[0].images[0]", "bytes"),
    ({"prompt": "x", "response": "y", "images": [b64(RED)] * 3}, 413, "items[0].images", "limit"),
    ({"prompt": "x", "response": "y" * 101}, 413, "items[0].response", "limit"),
    ({"prompt": [{"role": "user", "content": [{"type": "image"}]}], "response": "y"}, 422, "items[0].images",
     "fewer images"),
    ({"prompt": [{"role": "user", "content": "hi"}], "response": "y", "images": [b64(RED)]}, 422,
     "items[0].images", "no image placeholder"),
    ({"prompt": [{"role": "user", "content": [{"type": "text"}]}], "response": "y"}, 422,
     "items[0].prompt[0].content[0].text", "needs"),
])
def test_bad_items(item, status, field, words):
    with pytest.raises(BadInput) as err:
        _items({"prompt": "fine", "response": "fine"}, item)
    assert (err.value.status, err.value.field) == (status, field.replace("items[0]", "items[1]"))
    assert words in err.value.message


def test_too_many_items_and_pairs():
    with pytest.raises(BadInput, match="5 items, over the limit of 4") as err:
        _items(*[{"prompt": "p", "response": "r"}] * 5)
    assert err.value.status == 413
    with pytest.raises(BadInput, match="3 pairs") as err:
        prepare_pairs(CompareRequest(pairs=[{"prompt": "p", "chosen": "a", "rejected": "b"}] * 3), LIMITS)
    assert err.value.status == 413


def test_rgba_images_are_converted_not_refused():
    (item,) = _items({"prompt": "x", "response": "y", "images": [b64(png((1, 2, 3, 0), mode="RGBA"))]})
    from PIL import Image
    import io

    assert Image.open(io.BytesIO(item["images"][0])).mode == "RGB"


def test_openrlhf_request_splits_query_into_prompt_and_response():
    request = openrlhf_items(OpenRLHFRequest(query=["Q: 1+1? A: 2", "Q: sky? A: blue"],
                                             prompts=["Q: 1+1? A:", "Q: sky? A:"], labels=["2", None]))
    assert [(i.prompt, i.response, i.reference) for i in request.items] == [
        ("Q: 1+1? A:", " 2", "2"), ("Q: sky? A:", " blue", None)]
    with pytest.raises(BadInput, match="does not start with prompts\\[1\\]") as err:
        openrlhf_items(OpenRLHFRequest(query=["ab", "cd"], prompts=["a", "x"]))
    assert err.value.field == "query[1]"
    with pytest.raises(BadInput, match="1 prompts for 2 queries"):
        openrlhf_items(OpenRLHFRequest(query=["ab", "cd"], prompts=["a"]))


def test_image_count_is_checked_before_any_image_is_decoded():
    parts = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!not-base64!!"}}] * 3
    with pytest.raises(BadInput, match="3 images, over the limit of 2") as err:
        _items({"prompt": [{"role": "user", "content": parts}], "response": "r"})
    assert err.value.status == 413 and err.value.field == "items[0].images"
