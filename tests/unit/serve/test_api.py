"""Request checking in the ingress: every bad kind names its field; good inputs keep image order."""

import pytest

from mrm_ray.config import Limits
from mrm_ray.serve.api import BadInput, CompareRequest, ScoreRequest, prepare_items, prepare_pairs
from mrm_ray.serve.protocols import OpenRLHFRequest, openrlhf_items

from helpers.images import b64, data_url, huge_png, png

LIMITS = Limits(max_items=4, max_pairs=2, max_images_per_item=2, max_image_bytes=50_000,
                max_image_pixels=1_000_000, max_text_chars=100, max_responses=3)
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
    assert plain == {"prompt": "What colour?", "images": [RED], "responses": ["red"]}  # a group of one
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
    ({"prompt": "x", "responses": []}, 422, "items[0].responses", "at least one"),
    ({"prompt": "x", "responses": ["a", " "]}, 422, "items[0].responses[1]", "empty"),
    ({"prompt": "x", "responses": ["a"] * 4}, 413, "items[0].responses", "over the limit of 3"),
    ({"prompt": "x", "responses": ["a", "b" * 101]}, 413, "items[0].responses[1]", "limit"),
    ({"prompt": "x", "response": "a", "responses": ["b"]}, 422, "items[0].response", "not both"),
    ({"prompt": "x"}, 422, "items[0].response", "neither"),
])
def test_bad_items(item, status, field, words):
    with pytest.raises(BadInput) as err:
        _items({"prompt": "fine", "response": "fine"}, item)
    assert (err.value.status, err.value.field) == (status, field.replace("items[0]", "items[1]"))
    assert words in err.value.message


def test_a_plain_base64_jpeg_is_an_image_not_a_path():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(buf, format="JPEG")
    encoded = b64(buf.getvalue())
    assert encoded.startswith("/9j/")  # every JPEG's base64 does
    (item,) = _items({"prompt": "x", "response": "y", "images": [encoded]})
    assert item["images"] == [buf.getvalue()]
    for path in ("/etc/hostname", "./a.png", "~/b.jpg"):
        with pytest.raises(BadInput, match="never fetches URLs or reads paths"):
            _items({"prompt": "x", "response": "y", "images": [path]})


def test_a_group_item_keeps_its_prompt_once_and_its_responses_in_order():
    (group,) = _items({"prompt": "What colour?", "images": [b64(RED)], "responses": ["red", "blue", "green"]})
    assert group == {"prompt": "What colour?", "images": [RED], "responses": ["red", "blue", "green"]}


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


def test_chat_text_splits_into_the_conversation_the_template_made(processor):
    from mrm_ray.serve.protocols import split_chat_text

    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi?\nSay hi."},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again?"}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    for end in ("", "<|im_end|>", "<|im_end|>\n", "<|im_end|><|endoftext|>"):
        prompt, response = split_chat_text(text + "Yes.\nTwice." + end, field="q")
        assert [m.model_dump() for m in prompt] == messages and response == "Yes.\nTwice."
        # re-templated, the prompt is the text it came from: scoring it cannot wrap it twice
        assert processor.apply_chat_template([m.model_dump() for m in prompt], add_generation_prompt=True,
                                             tokenize=False) == text


@pytest.mark.parametrize("text, message", [
    ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What?<|im_end|>\n<|im_start|>assistant\nred",
     "1 image placeholder"),
    ("Q: hi <|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo", "outside a chat turn"),
    ("<|im_start|>user\nhi<|im_end|>\n", "must end with the assistant turn"),
    ("<|im_start|>assistant\nyo", "no prompt"),
])
def test_chat_text_that_cannot_be_scored_is_refused_naming_the_field(text, message):
    from mrm_ray.serve.protocols import split_chat_text

    with pytest.raises(BadInput, match=message) as refused:
        split_chat_text(text, field="query[3]")
    assert refused.value.field == "query[3]" and refused.value.status == 422


def test_openrlhf_and_vllm_requests_become_items():
    from mrm_ray.serve.protocols import PoolingRequest, pooling_items

    chat = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n\\boxed{4}<|im_end|>"
    items = openrlhf_items(OpenRLHFRequest(query=[chat, "Q: x A: y"], prompts=["ignored", "Q: x A:"],
                                           labels=["4", ""])).items
    assert items[0].prompt[0].content == "What is 2+2?" and items[0].response == "\\boxed{4}"
    assert items[0].reference == "4" and items[1].response == " y" and items[1].reference is None  # "" = none
    request = PoolingRequest(input=[chat, chat], use_activation=False, truncate_prompt_tokens=8, priority=1)
    assert [i.response for i in pooling_items(request).items] == ["\\boxed{4}"] * 2
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                                             {"type": "text", "text": "Colour?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "red"}]}]
    (item,) = pooling_items(PoolingRequest(messages=messages)).items
    assert item.response == "red" and item.prompt[0].content[0].type == "image_url"
    with pytest.raises(BadInput, match="either"):
        pooling_items(PoolingRequest())


VIDEO_LIMITS = Limits(max_items=4, max_images_per_item=2, max_videos_per_item=1, max_video_frames=3,
                      max_image_bytes=50_000)


def test_a_video_reaches_the_members_as_its_frames_in_order_where_its_placeholder_is():
    """A video (an ordered list of frames, inline) reaches the members as a video part where the video is (before
    a string prompt's text, after its images; or at its `video` part) with its decoded frames in order; each
    member's encoder gives it to its model by its route, and on the frames route it is its frames, each an image,
    in that place."""
    from mrm_ray.model.inputs import frames_as_images

    frames = [png((i * 60, 0, 0)) for i in range(3)]
    plain, chat = prepare_items(ScoreRequest(items=[
        {"prompt": "Which way?", "response": "left", "images": [b64(BLUE)], "videos": [[b64(f) for f in frames]]},
        {"prompt": [{"role": "user", "content": [{"type": "text", "text": "Watch"}, {"type": "video"},
                                                 {"type": "image"}, {"type": "text", "text": "then this."}]},
                    {"role": "assistant", "content": "It moves left."},
                    {"role": "user", "content": "And now?"}],
         "response": "right", "images": [data_url(RED)], "videos": [[data_url(f) for f in frames[::-1]]]}]),
        VIDEO_LIMITS)
    assert plain["images"] == [BLUE] and plain["videos"] == [frames]
    assert plain["prompt"][0]["content"] == [{"type": "image"}, {"type": "video"},
                                            {"type": "text", "text": "Which way?"}]
    assert chat["images"] == [RED] and chat["videos"] == [frames[::-1]]
    assert chat["prompt"][0]["content"] == [{"type": "text", "text": "Watch"}, {"type": "video"}, {"type": "image"},
                                           {"type": "text", "text": "then this."}]
    prompt, images = frames_as_images(plain["prompt"], plain["images"], plain["videos"])
    assert images == [BLUE, *frames]
    assert prompt[0]["content"] == [{"type": "image"}] * 4 + [{"type": "text", "text": "Which way?"}]
    prompt, images = frames_as_images(chat["prompt"], chat["images"], chat["videos"])
    assert images == [*frames[::-1], RED]
    assert prompt[0]["content"] == [{"type": "text", "text": "Watch"}, *[{"type": "image"}] * 4,
                                    {"type": "text", "text": "then this."}]


@pytest.mark.parametrize("item, status, field, words", [
    ({"videos": [[]]}, 422, "items[0].videos[0]", "no frames"),
    ({"videos": [[b64(RED)] * 4]}, 413, "items[0].videos[0]", "4 frames, over the limit of 3"),
    ({"videos": [[b64(RED), b64(png(size=(30, 30)))]]}, 422, "items[0].videos[0]", "different sizes"),
    ({"videos": [[b64(RED)], [b64(RED)]]}, 413, "items[0].videos", "2 videos"),
    ({"videos": [["/etc/passwd"]]}, 422, "items[0].videos[0][0]", "never"),
    ({"prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "x"}]}]}, 422,
     "items[0].videos", "video mismatch"),
])
def test_bad_videos_get_their_4xx_naming_the_field(item, status, field, words):
    with pytest.raises(BadInput) as info:
        prepare_items(ScoreRequest(items=[{"prompt": "x", "response": "y", **item}]), VIDEO_LIMITS)
    assert (info.value.status, info.value.field) == (status, field) and words in info.value.message, info.value
