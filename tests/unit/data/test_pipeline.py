"""The light pass and the encoder decide alike: `CheckPairs` counts a record's tokens from its images' (and its
videos' frames') sizes with the encoder's own rendering, and `EncodePairs` truncates every record the check passed as the check decided,
never refusing one (the two map_batches classes called in-process; no Ray here)."""

import random

import pytest

from helpers.images import noise_png
from mrm_ray.config import DataConfig, to_dict
from mrm_ray.data.pipeline import CheckPairs, EncodePairs
from mrm_ray.data.schema import canonical_pair
from mrm_ray.model.inputs import InvalidInput
from mrm_ray.model.truncation import fit_responses

WORDS = "the a red blue shape image shows is there cat dog on table two three left right why".split()
# tight enough that some prompts are over max_prompt_tokens and many responses are cut
CONFIG = DataConfig(max_length=130, max_prompt_tokens=70, max_response_tokens=40, min_response_tokens=4,
                    min_image_side=8)


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _records(n: int, *, images: bool, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        side = rng.randint(8, 60)  # every third record of a vision family has a video of 2 to 4 frames of one size
        videos = [[noise_png(rng, smallest=side, largest=side) for _ in range(rng.randint(2, 4))]] \
            if images and i % 3 == 0 else []
        shown = [noise_png(rng, smallest=8, largest=300) for _ in range(rng.randint(0, 2) if images else 0)]
        shown = shown[:1] if videos else shown
        prompt = [{"role": "system", "content": _text(rng, 0, 8)}] * rng.randint(0, 1) + [
            {"role": "user", "content": [{"type": "video"}] * len(videos) + [{"type": "image"}] * len(shown) + [
                {"type": "text", "text": _text(rng, 1, 20 if videos else 60)}]}]
        chosen, rejected = _text(rng, 1, 70), _text(rng, 1, 70)
        if chosen == rejected:
            rejected += " no"
        more = [_text(rng, 1, 50)] if i % 5 == 0 else []
        scores = [3.0, 1.0, 2.0] if more else None
        pair = canonical_pair(id=str(i), source="s", position=f"f:{i}", prompt=prompt, images=shown, chosen=chosen,
                              rejected=rejected, more_responses=more, scores=scores, videos=videos)
        out.append(pair)
    return out


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen3"])
def test_every_record_the_check_passes_encodes_as_it_counted(family, family_checkpoint):
    path = str(family_checkpoint(family))
    check, encode = CheckPairs(path, to_dict(CONFIG)), EncodePairs(path, to_dict(CONFIG))
    vision = family != "qwen3"
    records = _records(40, images=vision)
    passed = refused = videos = 0
    for row in records:
        try:
            checked = check.check(row)
        except InvalidInput as exc:
            refused += 1
            assert exc.reason.startswith(("prompt too long", "identical after truncation")), exc.reason
            continue
        passed += 1
        videos += bool(checked["videos"])
        feats = encode._encode({**row, "images": checked["images"], "videos": checked["videos"]})  # never refused
        assert len(feats["prompt_ids"]) == checked["prompt_tokens"], row["id"]  # counted from sizes == encoded
        lengths = [checked["chosen_tokens"], checked["rejected_tokens"], *checked["more_tokens"]]
        keep = fit_responses(checked["prompt_tokens"], lengths, CONFIG)
        assert [len(r) for r in feats["responses"]] == keep
        assert all(r[-1] == encode.encoder.tokenizer.convert_tokens_to_ids("<|im_end|>") for r in feats["responses"])
        longest_two = sorted(keep)[-2:]
        assert checked["prompt_tokens"] + sum(longest_two) <= CONFIG.max_length
    assert passed >= 20 and refused >= 1, (passed, refused)  # both kinds happen in this sample
    assert videos >= 5 if vision else videos == 0
    assert encode.encoder.video_route == "frames"  # this machine's route (no torchvision): each frame an image


def test_a_text_only_backbone_sets_videos_aside(family_checkpoint):
    from mrm_ray.data.quarantine import NotSupported

    row = _records(1, images=True)[0]
    assert row["videos"]
    with pytest.raises(NotSupported, match="videos, by a text-only backbone"):
        CheckPairs(str(family_checkpoint("qwen3")), to_dict(CONFIG)).check({**row, "images": []})
