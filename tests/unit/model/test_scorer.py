"""The one scorer equals the reward model run on each response alone, whatever its token budget,
and a group of responses to one prompt scores as the same responses sent one by one."""

import pytest
import torch

from mrm_ray.model.packing import collate_sequences

from mrm_ray.data.synthetic import image_grounded_pairs
from mrm_ray.model.checkpoints import resolve
from mrm_ray.model.checkpoints import version as checkpoint_version
from mrm_ray.model.scorer import Scorer, budget_chunks


def test_budget_chunks_sorts_by_length_and_respects_the_token_budget():
    lengths = [50, 10, 30, 10, 200]
    chunks = budget_chunks(lengths, 60)
    assert chunks == [[1, 3, 2], [0], [4]]  # 10 + 10 + 30 (packed rows carry no padding), 50, 200 alone
    assert sorted(i for c in chunks for i in c) == list(range(5))
    for chunk in chunks:
        assert len(chunk) == 1 or sum(lengths[i] for i in chunk) <= 60


@pytest.fixture(scope="module")
def rows():
    return list(image_grounded_pairs(6, seed=3)) + [
        {"prompt": "Say something kind.", "images": [], "chosen": "You did well.", "rejected": "Meh."}]


def _alone(model, encoder, prompt, images, response) -> float:
    """The reference: one prompt + response as its own padded sequence."""
    batch = collate_sequences([encoder.encode_item(prompt, images, response)], pad_token_id=encoder.pad_token_id)
    with torch.no_grad():
        return float(model(**batch)[0])


@pytest.mark.parametrize("budget", [1, 10_000])
def test_scores_equal_the_reward_model(reward_checkpoints, rows, budget):
    from mrm_ray.model.reward_model import RewardModel

    scorer = Scorer(str(reward_checkpoints[0]), max_batch_tokens=budget)
    model = RewardModel.from_pretrained(reward_checkpoints[0]).eval()
    items = [{"prompt": r["prompt"], "images": r["images"], "response": r["chosen"]} for r in rows]
    expected = [_alone(model, scorer.encoder, r["prompt"], r["images"], r["chosen"]) for r in rows]
    assert scorer.score_items(items) == pytest.approx(expected, abs=1e-4)
    expected_pairs = [(c, _alone(model, scorer.encoder, r["prompt"], r["images"], r["rejected"]))
                      for c, r in zip(expected, rows)]
    assert torch.allclose(torch.tensor(scorer.score_pairs(rows)), torch.tensor(expected_pairs), atol=1e-4)


def test_a_group_scores_as_its_responses_one_by_one_with_the_image_run_once(reward_checkpoints, rows):
    scorer = Scorer(str(reward_checkpoints[0]))
    prompt, images = rows[0]["prompt"], rows[0]["images"]
    responses = [rows[0]["chosen"], rows[0]["rejected"], "red", "blue", "It is a square.", "no", "maybe", "x y z"]
    seen = []
    hook = scorer.model.backbone.visual.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        (grouped,) = scorer.score_groups([{"prompt": prompt, "images": images, "responses": responses}])
    finally:
        hook.remove()
    one_by_one = scorer.score_items([{"prompt": prompt, "images": images, "response": r} for r in responses])
    assert grouped == pytest.approx(one_by_one, abs=1e-4)
    patches = len(scorer.encoder.encode_prompt(prompt, images)["pixel_values"])
    assert seen == [patches]  # one vision forward for the whole group


def test_a_bad_item_gets_its_own_error_and_the_rest_are_scored(reward_checkpoints):
    scorer = Scorer(str(reward_checkpoints[0]))
    good = {"prompt": "hello", "images": [], "response": "hi"}
    bad = {"prompt": [{"role": "user", "content": [{"type": "image"}]}], "images": [], "response": "x"}
    out = scorer.score_items([good, bad, good])
    # the same item in two rows of one batch: equal up to float noise (CPU kernels differ per row)
    assert isinstance(out[0], float) and out[0] == pytest.approx(out[2], abs=1e-5)
    assert isinstance(out[1], str) and "cannot encode" in out[1] and "image placeholders" in out[1]


def test_versions_differ_between_checkpoints_and_plain_backbones_are_refused(reward_checkpoints, tiny_checkpoint):
    versions = {checkpoint_version(p) for p in reward_checkpoints}
    assert len(versions) == 3 and all(len(v) == 12 for v in versions)
    with pytest.raises(ValueError, match="not a reward checkpoint"):
        resolve(str(tiny_checkpoint))


def test_normalisation_override(reward_checkpoints):
    scorer = Scorer(str(reward_checkpoints[1]), score_mean=2.0, score_std=4.0)
    assert (scorer.score_mean, scorer.score_std) == (2.0, 4.0)
    assert Scorer(str(reward_checkpoints[1])).score_std == 1.0  # the checkpoint's own


def test_encoded_groups_that_name_their_pairs_still_score_per_response(reward_checkpoints, rows):
    from mrm_ray.model.packing import pair_group

    scorer = Scorer(str(reward_checkpoints[0]))
    encoded = [scorer.encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"]) for r in rows]
    got = torch.tensor(scorer.score_encoded([pair_group(p) for p in encoded]))
    assert torch.allclose(got, torch.tensor(scorer.score_pairs(rows)), atol=1e-5)


def _whole_conversation(scorer, prompt, images, parts, response_images):
    """The reference for a response with images inside: the processor's own rendering of the whole
    conversation (chat template, images expanded), run by the model as one sequence."""
    from mrm_ray.model.inputs import as_messages, load_image

    messages = as_messages(prompt, len(images)) + [{"role": "assistant", "content": parts}]
    text = scorer.encoder.processor.apply_chat_template(messages, tokenize=False).rstrip("\n")
    pil = [load_image(im) for im in [*images, *response_images]]
    enc = scorer.encoder.processor(text=[text], images=pil or None, return_tensors="np")
    ids, mm = enc["input_ids"][0], enc["mm_token_type_ids"][0]
    item = {"prompt_ids": ids[:-1], "prompt_mm_token_type_ids": mm[:-1], "response_ids": ids[-1:],
            "pixel_values": enc["pixel_values"], "image_grid_thw": enc["image_grid_thw"]}
    with torch.no_grad():
        reward = float(scorer.model(**collate_sequences([item], pad_token_id=scorer.encoder.pad_token_id))[0])
    return ids, reward


@pytest.mark.parametrize("with_prompt_image", [True, False])
def test_responses_with_images_inside_score_as_the_whole_conversation(reward_checkpoints, rows, with_prompt_image):
    """MMRB2-style responses ("thinking with images"): text and images interleaved, one `<image>` mark per image;
    a pair may mix such a response with a text-only one."""
    from mrm_ray.model.inputs import IMAGE_MARKER

    scorer = Scorer(str(reward_checkpoints[0]), max_batch_tokens=64)  # several forwards: order must hold
    prompt, images = rows[0]["prompt"], rows[0]["images"] if with_prompt_image else []
    drawn = [rows[1]["images"][0], rows[2]["images"][0]]
    chosen = f"I zoom in. {IMAGE_MARKER} The crop shows red. {IMAGE_MARKER} So: red."
    ends_on_image = f"Here is my sketch: {IMAGE_MARKER}"
    pairs = [{"prompt": prompt, "images": images, "chosen": chosen, "rejected": "It is blue.",
              "chosen_images": drawn, "rejected_images": []},
             {"prompt": prompt, "images": images, "chosen": "Plain text.", "rejected": ends_on_image,
              "chosen_images": [], "rejected_images": drawn[1:]}]
    got = scorer.score_pairs(pairs)
    parts = [{"type": "text", "text": "I zoom in. "}, {"type": "image"}, {"type": "text", "text": " The crop shows red. "},
             {"type": "image"}, {"type": "text", "text": " So: red."}]
    ids, expected = _whole_conversation(scorer, prompt, images, parts, drawn)
    groups, _ = scorer.encoder.encode_groups(prompt, images, [chosen], [drawn])
    assert (groups[0]["prompt_ids"].tolist() + groups[0]["responses"][0].tolist()) == ids.tolist()  # same tokens
    assert got[0][0] == pytest.approx(expected, abs=1e-4)
    text_only = scorer.score_items([{"prompt": prompt, "images": images, "response": "It is blue."}])[0]
    assert got[0][1] == pytest.approx(text_only, abs=1e-4)
    _, expected_end = _whole_conversation(scorer, prompt, images, [{"type": "text", "text": "Here is my sketch: "},
                                                                   {"type": "image"}], drawn[1:])
    assert got[1][1] == pytest.approx(expected_end, abs=1e-4)
    # a mark without its image is this pair's error only
    bad = scorer.score_pairs([{**pairs[0], "chosen_images": drawn[:1]}, pairs[1]])
    assert "2 <image> marks but 1 images" in bad[0] and bad[1] == pytest.approx(got[1], abs=1e-4)
