"""The light pass and the encoder decide alike: `CheckPairs` counts a record's tokens from its images' (and its
videos' frames') sizes with the encoder's own rendering, and `EncodePairs` truncates every record the check passed
as the check decided, never refusing one (the two map_batches classes called in-process; no Ray here)."""

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
    # the route `auto` takes: the family's video processor where torchvision imports, else each frame an image
    assert encode.encoder.video_route == ("video" if hasattr(encode.encoder.processor, "video_processor") and
                                          encode.encoder.processor.video_processor is not None else "frames")


def test_a_text_only_backbone_sets_videos_aside(family_checkpoint):
    from mrm_ray.data.quarantine import NotSupported

    row = _records(1, images=True)[0]
    assert row["videos"]
    with pytest.raises(NotSupported, match="videos, by a text-only backbone"):
        CheckPairs(str(family_checkpoint("qwen3")), to_dict(CONFIG)).check({**row, "images": []})


def test_the_trainers_batches_score_video_records_as_the_scorer_does(tiny_checkpoint):
    """The heavy pass end to end, in process: checked records with videos (and without) encoded by `EncodePairs`
    into the columns the trainers stream, collated by `PairCollate`: the model's rewards on that batch equal the
    scorer's on the same records, whichever route the run takes (the frames here, the family's video path where
    its video processor loads: then the batch carries every video's grid)."""
    import pyarrow as pa
    import torch

    from mrm_ray.data.collate import PairCollate
    from mrm_ray.data.schema import PAIR_SCHEMA, to_chat_messages
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.model.scorer import Scorer

    config = DataConfig()
    path = str(tiny_checkpoint)
    check, encode = CheckPairs(path, to_dict(config)), EncodePairs(path, to_dict(config))
    rows = [{**r, **{k: v for k, v in check.check(r).items() if k in ("images", "videos")}}
            for r in _records(12, images=True, seed=3) if not r["more_responses"]]  # pairs: a reward each side
    assert sum(bool(r["videos"]) for r in rows) == 3
    columns = encode(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA))
    batch = PairCollate(pad_token_id=encode.encoder.pad_token_id)(columns)
    if encode.encoder.video_route == "video":
        assert len(batch["video_grid_thw"]) == 3
    else:
        assert "video_grid_thw" not in batch
    model = RewardModel.from_pretrained(path).eval()
    with torch.no_grad():
        chosen, rejected = model(**batch)
    scored = Scorer.from_model(model, encode.encoder).score_pairs(
        [{**r, "prompt": to_chat_messages(r["prompt"])} for r in rows])
    torch.testing.assert_close(chosen, torch.tensor([c for c, _ in scored]), atol=1e-4, rtol=0)
    torch.testing.assert_close(rejected, torch.tensor([r for _, r in scored]), atol=1e-4, rtol=0)
