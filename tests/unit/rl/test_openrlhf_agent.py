"""What the OpenRLHF agent sends for one rollout: the templated prompt back as turns, image placeholders as
image parts in place, the generation prompt's empty assistant turn dropped, images read on this side."""

import pytest

pytest.importorskip("openrlhf.utils.agent", reason="peers' agent API: pip install --no-deps openrlhf==0.11.2")

from mrm_ray.rl.openrlhf_agent import AgentExecutor, reward_item  # noqa: E402

from helpers.images import png  # noqa: E402

RED = png((220, 20, 20))


def test_a_templated_prompt_with_an_image_becomes_turns_with_the_image_in_place(processor, tmp_path):
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image"},
                                             {"type": "text", "text": "What colour?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    path = tmp_path / "red.png"
    path.write_bytes(RED)
    item = reward_item(prompt, [str(path), None], "Red.", "red", hybrid=True)
    assert item == {"prompt": [{"role": "system", "content": "Answer briefly."},
                               {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image"},
                                                            {"type": "text", "text": "What colour?"}]}],
                    "images": [RED], "response": "Red.", "reference": "red"}
    assert "reference" not in reward_item(prompt, [RED], "Red.", "red", hybrid=False)
    plain = reward_item("<|vision_start|><|image_pad|><|vision_end|>What colour?", RED, "Red.", None, hybrid=True)
    assert plain == {"prompt": "What colour?", "images": [RED], "response": "Red."}
    with pytest.raises(ValueError, match="only image placeholders"):
        reward_item("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Hm?<|im_end|>\n", [], "x", None,
                    hybrid=False)


def test_the_executor_is_configured_by_the_environment_and_says_what_is_missing(monkeypatch):
    monkeypatch.delenv("MRM_REWARD_URL", raising=False)
    with pytest.raises(ValueError, match="set MRM_REWARD_URL"):
        AgentExecutor()
    monkeypatch.setenv("MRM_REWARD_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MRM_REWARD", "rule")
    with pytest.raises(ValueError, match="reward: Input should be 'model' or 'hybrid'"):
        AgentExecutor()
    monkeypatch.setenv("MRM_REWARD", "hybrid")
    monkeypatch.setenv("MRM_GROUP_SIZE", "8")
    executor = AgentExecutor()
    assert (executor.settings.url, executor.settings.reward, executor.settings.group_size,
            executor.reward_endpoints) == (
        "http://127.0.0.1:9", "hybrid", 8, [])
