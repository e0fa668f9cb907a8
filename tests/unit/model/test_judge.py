"""A judge member reads its reward from the LM head exactly as the model's own forward does on the chat
template's rendering of the question; the pairwise reading is antisymmetric in the order; a critique that
runs out of time gives no score and a reason; bad judges are refused at load, naming the member and the
setting."""

import json
import shutil

import pytest
import torch

from helpers.images import png
from mrm_ray.config import ConfigError, EnsembleMember, JudgeConfig, validate
from mrm_ray.model.families import family_of
from mrm_ray.model.inputs import load_image
from mrm_ray.model.judge import Judge

PROMPT = "What colour is the square?"
RESPONSES = ["It is red.", " It is blue, clearly.", "\nRed", "[End of response]"]  # edges the tokenizer may merge


def _generator(path):
    from transformers import AutoConfig

    return family_of(AutoConfig.from_pretrained(path)).transformers_class("generator").from_pretrained(path).eval()


def _reference(path, judge: JudgeConfig, images, user: str, *, after: list[int] = ()) -> float:
    """log P(good) - log P(bad) for the reply's first token by transformers' own model on the chat template's
    rendering (the system turn, the images, the filled user text, the reply's start; then `after`'s ids)."""
    from transformers import AutoConfig

    from mrm_ray.model.processor import load_processor

    processor = load_processor(path)
    template = judge.prompt
    messages = [{"role": "system", "content": template.system},
                {"role": "user", "content": [{"type": "image"}] * len(images) + [{"type": "text", "text": user}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=False, tokenize=False)
    enc = processor(text=[text], images=[load_image(i) for i in images] or None, return_tensors="pt")
    enc = dict(enc)
    if not family_of(AutoConfig.from_pretrained(path)).vision:
        enc.pop("mm_token_type_ids", None)
    if after:
        enc["input_ids"] = torch.cat([enc["input_ids"], torch.tensor([after])], dim=1)
        enc["attention_mask"] = torch.ones_like(enc["input_ids"])
        if "mm_token_type_ids" in enc:
            enc["mm_token_type_ids"] = torch.cat([enc["mm_token_type_ids"], torch.zeros(1, len(after), dtype=torch.long)], 1)
    with torch.no_grad():
        logp = torch.log_softmax(_generator(path)(**enc).logits[0, -1].float(), -1)
    good, bad = (processor.tokenizer.convert_tokens_to_ids(t) for t in judge.tokens)
    return float(logp[good] - logp[bad])


@pytest.fixture(scope="module")
def text_judge_path(family_checkpoint):
    return family_checkpoint("qwen3")


@pytest.mark.parametrize("case", ["image", "text"])
def test_verdict_equals_the_models_own_forward_on_the_rendering(case, tiny_checkpoint, text_judge_path):
    path, images = (tiny_checkpoint, [png()]) if case == "image" else (text_judge_path, [])
    config = JudgeConfig()
    judge = Judge(str(path), config, max_batch_tokens=10_000)
    (got,) = judge.score_groups([{"prompt": PROMPT, "images": images, "responses": RESPONSES}])
    expected = [_reference(path, config, images, config.prompt.user.format(prompt=PROMPT, response=r))
                for r in RESPONSES]
    assert got == pytest.approx(expected, abs=1e-4)
    assert len(set(round(x, 6) for x in got)) == len(got)  # the readings differ: each response was read
    # a token budget of one group per forward changes nothing
    small = Judge(str(path), config, max_batch_tokens=1)
    assert small.score_items([{"prompt": PROMPT, "images": images, "response": r} for r in RESPONSES]) == \
        pytest.approx(expected, abs=1e-4)


def test_pairwise_reads_both_orders_and_swapping_negates_the_margin(tiny_checkpoint):
    config = JudgeConfig(mode="pairwise")
    judge = Judge(str(tiny_checkpoint), config)
    pairs = [{"prompt": PROMPT, "images": [png()], "chosen": "It is red.", "rejected": "Blue."},
             {"prompt": "Say hi.", "images": [], "chosen": "Hello there!", "rejected": "Go away."}]
    swapped = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in pairs]
    forward, backward = judge.score_pairs(pairs), judge.score_pairs(swapped)
    for (c, r), (c2, r2) in zip(forward, backward):
        assert c - r == pytest.approx(-(c2 - r2), abs=1e-4) and c == pytest.approx(-r, abs=1e-9)
    for p, (c, r), (margin, consistent) in zip(pairs, forward, judge.compare_orders(pairs)):
        fields = {"prompt": p["prompt"]}
        first = _reference(tiny_checkpoint, config, p["images"], config.prompt.user.format(
            **fields, first=p["chosen"], second=p["rejected"]))
        second = _reference(tiny_checkpoint, config, p["images"], config.prompt.user.format(
            **fields, first=p["rejected"], second=p["chosen"]))
        assert margin == pytest.approx((first - second) / 2, abs=1e-4) and c - r == pytest.approx(margin, abs=1e-6)
        assert consistent == ((first > 0) == (second < 0))
    # a pairwise judge gives single responses no score, with the reason
    (reasons,) = judge.score_groups([{"prompt": PROMPT, "images": [], "responses": ["a", "b"]}])
    assert all(isinstance(x, str) and "pairwise" in x for x in reasons)


def test_critique_generates_then_reads_the_verdict_and_a_timeout_gives_no_score(text_judge_path):
    config = JudgeConfig(mode="critique", max_critique_tokens=5)
    judge = Judge(str(text_judge_path), config)
    (got,) = judge.score_groups([{"prompt": PROMPT, "images": [], "responses": RESPONSES[:2]}])
    tokenizer = judge.encoder.tokenizer
    verdict = tokenizer(config.prompt.verdict, add_special_tokens=False)["input_ids"]
    for response, value in zip(RESPONSES[:2], got):
        (question,), _ = judge.encoder.encode_groups(PROMPT, [], [response])
        ids = torch.as_tensor(list(question["prompt_ids"]) + list(question["responses"][0]))[None]
        critique = _generator(text_judge_path).generate(ids, max_new_tokens=5, do_sample=False)[0, ids.shape[1]:]
        critique = critique.tolist()
        if tokenizer.eos_token_id in critique:
            critique = critique[:critique.index(tokenizer.eos_token_id)]
        expected = _reference(text_judge_path, config, [], config.prompt.user.format(prompt=PROMPT, response=response),
                              after=critique + verdict)
        assert value == pytest.approx(expected, abs=1e-4)

    slow = Judge(str(text_judge_path), JudgeConfig(mode="critique", max_critique_tokens=100_000,
                                                   critique_timeout_s=0.01))
    (late,) = slow.score_groups([{"prompt": PROMPT, "images": [], "responses": ["a", "b"]}])
    assert all(isinstance(x, str) and "timed out" in x and "critique_timeout_s" in x for x in late)


# ------------------------------------------------------------------------------ bad judges
def _member(**judge):
    return {"name": "vlm", "path": "tiny", "kind": "judge", "judge": judge}


@pytest.mark.parametrize("judge, says", [
    ({"template": {"user": "{prompt} only"}}, "member vlm: judge.template.user must hold {response} once"),
    ({"mode": "pairwise", "template": {"user": "{prompt} {first} {response}"}},
     "judge.template.user must hold {second} once"),
    ({"mode": "critique", "template": {"user": "{prompt} {response}"}}, "judge.template.verdict must say"),
    ({"template": {"user": "{prompt} {response} {answer}"}}, "judge.template.user has {answer}"),
    ({"yes_token": "No"}, "judge tokens must differ"),
])
def test_a_template_without_its_placeholders_is_refused_naming_the_member_and_setting(judge, says):
    with pytest.raises(ConfigError, match=None) as info:
        validate(EnsembleMember, _member(**judge))
    assert says in str(info.value)


def test_judge_settings_on_a_scalar_member_are_refused():
    with pytest.raises(ConfigError, match="member s: judge settings are for `kind: judge`"):
        validate(EnsembleMember, {"name": "s", "path": "tiny", "judge": {"mode": "pairwise"}})


def test_a_token_that_is_not_one_token_is_refused_at_load(tiny_checkpoint):
    with pytest.raises(ValueError, match=r"member vlm: judge.yes_token 'yes' is 2 tokens"):
        Judge(str(tiny_checkpoint), JudgeConfig(yes_token="yes"), name="vlm")
    with pytest.raises(ValueError, match=r"member vlm: judge.second_token 'Bee' is \d tokens"):
        Judge(str(tiny_checkpoint), JudgeConfig(mode="pairwise", second_token="Bee"), name="vlm")


def test_a_checkpoint_without_an_lm_head_is_refused_at_load(tmp_path, text_judge_path, reward_checkpoints):
    headless = tmp_path / "headless"
    shutil.copytree(text_judge_path, headless)
    config = json.loads((headless / "config.json").read_text())
    (headless / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    with pytest.raises(ValueError, match="member vlm: .* has no LM head"):
        Judge(str(headless), name="vlm")
    with pytest.raises(ValueError, match="member vlm: .* is a reward checkpoint, which has no LM head"):
        Judge(str(reward_checkpoints[0]), name="vlm")
