"""The reward ensemble on real Ray Serve, deployed with `serve deploy` from the shipped config,
exercised over HTTP: offline-equal scores, batching, bad input, a killed replica, a live
checkpoint swap, auth, and the OpenRLHF protocol."""

import json
import math
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
import yaml

import mrm_ray
from mrm_ray.config.shipped import path as shipped
from mrm_ray.model.checkpoints import version as checkpoint_version
from mrm_ray.model.scorer import Scorer

from helpers.images import b64, data_url, huge_png, png, transformers_score
from helpers.ray_head import BIN, RayHead, job_status, ray_env

CONFIG = shipped("serve", "tiny")
RED, GREEN = png((220, 20, 20)), png((20, 200, 20))
TOKEN = "tok-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A Ray head with the ensemble deployed from (a copy of) the shipped Serve config."""

    def __init__(self, head: RayHead, tmp: Path, checkpoints: list[Path]) -> None:
        self.head, self.tmp, self.checkpoints = head, tmp, checkpoints
        self.config = yaml.safe_load(CONFIG.read_text())
        self.config["http_options"]["port"] = _free_port()
        self.url = f"http://127.0.0.1:{self.config['http_options']['port']}"
        app = self.config["applications"][0]
        for member, path in zip(app["args"]["members"], checkpoints):
            member["path"] = str(path)
        app["args"]["limits"] = {"max_items": 8, "max_pairs": 4, "max_responses": 24, "max_image_bytes": 100_000,
                                 "max_image_pixels": 1_000_000, "max_text_chars": 2_000,
                                 "max_request_bytes": 2_000_000}
        app["runtime_env"] = {"env_vars": {"MRM_SERVE_TOKEN": TOKEN}}  # auth on (the ensemble app below: off)
        self.deploy()

    def deploy(self, timeout: float = 240) -> None:
        path = self.tmp / f"serve-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(self.config))
        out = subprocess.run([str(BIN / "serve"), "deploy", "--address", self.head.address, str(path)],
                             env=ray_env(), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = subprocess.run([str(BIN / "serve"), "status", "--address", self.head.address],
                                    env=ray_env(), capture_output=True, text=True, timeout=60).stdout
            if "status: RUNNING" in status and "UPDATING" not in status and "DEPLOYING" not in status:
                return
            assert "DEPLOY_FAILED" not in status, status
            time.sleep(1)
        raise AssertionError(f"not RUNNING after {timeout} s:\n{status}")

    def post(self, path: str, payload=None, *, headers=AUTH, **kw) -> requests.Response:
        return requests.post(self.url + path, json=payload, timeout=60, headers=headers, **kw)

    def models(self) -> dict:
        response = requests.get(self.url + "/v1/models", timeout=60, headers=AUTH)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def served(ray_head, tmp_path_factory, reward_checkpoints):
    served = Served(ray_head, tmp_path_factory.mktemp("serve"), reward_checkpoints)
    yield served
    ray_head.serve_shutdown()  # leave nothing running for the next module


@pytest.fixture(scope="module")
def offline(reward_checkpoints):
    return [Scorer(str(p)) for p in reward_checkpoints]


ITEMS = [
    {"prompt": "Is the sky blue on a clear day?", "response": "Yes, it is."},
    {"prompt": "What colour is the square?", "response": "red", "images": [b64(RED)]},
    {"prompt": [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(GREEN)}},
                                             {"type": "image"}, {"type": "text", "text": "Same colours?"}]}],
     "response": "No: green, then red.", "images": [data_url(RED)]},
]
DECODED = [{"prompt": ITEMS[0]["prompt"], "images": [], "response": ITEMS[0]["response"]},
           {"prompt": ITEMS[1]["prompt"], "images": [RED], "response": "red"},
           {"prompt": [ITEMS[2]["prompt"][0], {"role": "user", "content": [
               {"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same colours?"}]}],
            "images": [GREEN, RED], "response": ITEMS[2]["response"]}]


def test_scores_and_margins_equal_offline_reward_models(served, offline):
    response = served.post("/v1/score", {"items": ITEMS})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = [s.score_items(DECODED) for s in offline[:2]]
    assert body["members"] == {"tiny-a": offline[0].version, "tiny-b": offline[1].version}
    for j, result in enumerate(body["results"]):
        a, b = expected[0][j], expected[1][j]
        assert result["scores"] == pytest.approx({"tiny-a": a, "tiny-b": b}, abs=1e-4)
        assert result["reward"] == pytest.approx((a + b) / 2, abs=1e-4) == result["model_reward"]
        assert result["std"] == pytest.approx(abs(a - b) / 2, abs=1e-4)

    pairs = [{"prompt": "What colour is the square?", "images": [b64(RED)], "chosen": "red", "rejected": "green"},
             {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}]
    response = served.post("/v1/compare", {"pairs": pairs})
    assert response.status_code == 200, response.text
    decoded = [{**pairs[0], "images": [RED]}, {**pairs[1], "images": []}]
    offline_pairs = [s.score_pairs(decoded) for s in offline[:2]]
    for j, result in enumerate(response.json()["results"]):
        margins = [c - r for c, r in (offline_pairs[0][j], offline_pairs[1][j])]
        assert result["margins"] == pytest.approx({"tiny-a": margins[0], "tiny-b": margins[1]}, abs=1e-4)
        assert result["margin"] == pytest.approx(sum(margins) / 2, abs=1e-4)
        assert result["prob_chosen"] == pytest.approx(1 / (1 + math.exp(-sum(margins) / 2)), abs=1e-4)


def test_a_group_item_scores_each_response_as_its_own_item(served, offline):
    """One prompt with 20 responses (more than a member's batch of 16: split over two calls) and a plain
    item: one result per response, in order, equal to scoring each response alone."""
    responses = [f"The square is {c}." for c in ("red", "green", "blue", "pink")] * 5
    group = {"prompt": "What colour is the square?", "images": [b64(RED)], "responses": responses}
    response = served.post("/v1/score", {"items": [group, ITEMS[0]]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(responses) + 1
    singles = [{"prompt": group["prompt"], "images": [RED], "response": r} for r in responses] + DECODED[:1]
    expected = [s.score_items(singles) for s in offline[:2]]
    for j, result in enumerate(results):
        assert result["scores"] == pytest.approx({"tiny-a": expected[0][j], "tiny-b": expected[1][j]}, abs=1e-4)
    bad = served.post("/v1/score", {"items": [{**group, "responses": ["fine", ""]}]})
    assert bad.status_code == 422 and "items[0].responses[1]" in bad.text, bad.text


def test_multi_turn_conversations_and_videos_score_as_offline(served, offline, processor):
    """A conversation with images in two user turns and an assistant turn between them scores, in each form a
    client sends it (a prompt and a response; the conversation ending with the assistant turn scored; OpenRLHF's
    chat-templated query; veRL's raw_prompt), as the members score it offline; a conversation that does not end
    where it should is a 422 naming the turn."""
    from mrm_ray.rl.verl import compute_score

    def user(text, image):
        return {"role": "user", "content": [{"type": "image", "image": b64(image)}, {"type": "text", "text": text}]}

    turns = [{"role": "system", "content": "Answer briefly."}, user("What colour is this?", RED),
             {"role": "assistant", "content": "Red."}, user("And this one?", GREEN)]
    decoded = [{"role": "system", "content": "Answer briefly."},
               {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is this?"}]},
               {"role": "assistant", "content": "Red."},
               {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this one?"}]}]
    expected = [s.score_items([{"prompt": decoded, "images": [RED, GREEN], "response": "Green."}])[0]
                for s in offline[:2]]
    whole = {"prompt": [*turns, {"role": "assistant", "content": "Green."}]}
    for item in ({"prompt": turns, "response": "Green."}, whole):
        response = served.post("/v1/score", {"items": [item]})
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["scores"] == pytest.approx(
            {"tiny-a": expected[0], "tiny-b": expected[1]}, abs=1e-4)
    for bad, field in (({**whole, "response": "Green."}, "items[0].prompt[4]"),
                       ({"prompt": turns}, "items[0].prompt[3]")):
        refused = served.post("/v1/score", {"items": [bad]})
        assert refused.status_code == 422 and refused.json()["field"] == field, refused.text
    refused = served.post("/v1/compare", {"pairs": [{"prompt": whole["prompt"], "chosen": "a", "rejected": "b"}]})
    assert refused.status_code == 422 and refused.json()["field"] == "pairs[0].prompt[4]", refused.text

    # a video (an ordered list of frames, inline) in the second user turn: each member takes its route (auto: the
    # frames here, where no video processor loads), says so in /v1/models, and scores it as its frames, in order
    assert {m["video_route"] for m in served.models()["members"]} == {"frames"}
    video_turns = [*turns[:3], {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Which way?"}]}]
    sent = served.post("/v1/score", {"items": [{"prompt": video_turns, "videos": [[b64(GREEN), b64(RED)]],
                                                "response": "Left."}]})
    assert sent.status_code == 200, sent.text
    frames_prompt = [*decoded[:3], {"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                                 {"type": "text", "text": "Which way?"}]}]
    want_video = [s.score_items([{"prompt": frames_prompt, "images": [RED, GREEN, RED], "response": "Left."}])[0]
                  for s in offline[:2]]
    assert sent.json()["results"][0]["scores"] == pytest.approx({"tiny-a": want_video[0], "tiny-b": want_video[1]},
                                                                abs=1e-4)

    # OpenRLHF: the multi-turn conversation its chat template wrote, as one query (text turns)
    text_turns = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."},
                  {"role": "user", "content": "Another one?"}]
    query = processor.apply_chat_template([*text_turns, {"role": "assistant", "content": "Blue."}], tokenize=False)
    prompt = processor.apply_chat_template(text_turns, tokenize=False, add_generation_prompt=True)
    got = served.post("/get_reward", {"query": [query], "prompts": [prompt]})
    assert got.status_code == 200, got.text
    want = sum(s.score_items([{"prompt": text_turns, "images": [], "response": "Blue."}])[0] for s in offline[:2]) / 2
    assert got.json()["rewards"][0] == pytest.approx(want, abs=1e-4)

    # veRL: the multi-turn chat its agent loop puts under extra_info["raw_prompt"]
    out = compute_score(data_source="vqa", solution_str="Green.", ground_truth=None, extra_info={"raw_prompt": turns},
                        url=served.url, token=TOKEN, reward="model")
    assert out["model_reward"] == pytest.approx(sum(expected) / 2, abs=1e-4)


def test_openrlhf_protocol_and_hybrid_reward(served, offline):
    prompts = ["Q: What is 2+2? A:", "Q: Name a colour. A:"]
    payload = {"query": [prompts[0] + " \\boxed{4}", prompts[1] + " blue"], "prompts": prompts, "labels": ["4", "red"]}
    plain = served.post("/get_reward", payload)
    assert plain.status_code == 200, plain.text
    expected = [(a + b) / 2 for a, b in zip(*(s.score_items(
        [{"prompt": p, "images": [], "response": q[len(p):]} for p, q in zip(prompts, payload["query"])])
        for s in offline[:2]))]
    body = plain.json()
    assert body["rewards"] == pytest.approx(expected, abs=1e-4) and body["scores"] == body["rewards"]
    assert set(body["extra_logs"]) == {"ensemble_std", "score_tiny-a", "score_tiny-b"}
    hybrid = served.post("/get_reward?reward=hybrid", payload).json()
    assert hybrid["rewards"][0] == 1.0  # \boxed{4} matches the label
    assert hybrid["rewards"][1] == pytest.approx(1 / (1 + math.exp(-expected[1])), abs=1e-4)
    bad = served.post("/get_reward", {**payload, "query": [payload["query"][0], "something else"]})
    assert bad.status_code == 422 and bad.json()["field"] == "query[1]"


def test_a_request_asks_for_a_conservative_method_and_gets_the_offline_aggregate(served, offline):
    """`method` / `uncertainty_coef` in a request (and `?method=` on /get_reward) override the app's mean; each
    result equals ensemble.py's aggregate of the offline members' scores and says which method made it."""
    import numpy as np

    from mrm_ray.ensemble import aggregate

    raw = np.array([s.score_items(DECODED) for s in offline[:2]])
    stats = {"means": [s.score_mean for s in offline[:2]], "stds": [s.score_std for s in offline[:2]]}
    default = served.post("/v1/score", {"items": ITEMS}).json()
    assert {r["method"] for r in default["results"]} == {"mean"} and default["uncertainty_coef"] == 0.5
    for method, coef in (("min", None), ("uwo", 0.7), ("lcb", 2.0), ("z_mean", None)):
        body = served.post("/v1/score", {"items": ITEMS, "method": method} |
                           ({"uncertainty_coef": coef} if coef is not None else {})).json()
        want = aggregate(raw, method=method, uncertainty_coef=0.5 if coef is None else coef, **stats)
        assert [r["model_reward"] for r in body["results"]] == pytest.approx(want.reward.tolist(), abs=1e-4), method
        assert [r["std"] for r in body["results"]] == pytest.approx(want.std.tolist(), abs=1e-4), method
        assert {r["method"] for r in body["results"]} == {method}
    # the conservative reward is at most the mean of the z-scores, by the disagreement
    z = aggregate(raw, method="z_mean", **stats).reward
    assert (aggregate(raw, method="min", **stats).reward <= z + 1e-9).all()

    pairs = [{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}]
    pair = served.post("/v1/compare", {"pairs": pairs, "method": "min"}).json()["results"][0]
    c, r = np.array([s.score_pairs([{**pairs[0], "images": []}])[0] for s in offline[:2]]).T
    want = aggregate(c[:, None], method="min", **stats).reward - aggregate(r[:, None], method="min", **stats).reward
    assert pair["margin"] == pytest.approx(float(want[0]), abs=1e-4) and pair["method"] == "min"

    prompts = ["Q: Name a colour. A:"]
    get = served.post("/get_reward?method=uwo&uncertainty_coef=1.5", {"query": [prompts[0] + " blue"],
                                                                      "prompts": prompts}).json()
    one = np.array([s.score_items([{"prompt": prompts[0], "images": [], "response": " blue"}]) for s in offline[:2]])
    assert get["rewards"] == pytest.approx(aggregate(one, method="uwo", uncertainty_coef=1.5, **stats).reward.tolist(),
                                           abs=1e-4)
    assert get["extra_logs"]["ensemble_std"] == pytest.approx(
        aggregate(one, method="uwo", **stats).std.tolist(), abs=1e-4)
    for body, query, field in (({"method": "median"}, "", "method"), ({"uncertainty_coef": -1}, "", "uncertainty_coef"),
                               ({"uncertainty_coef": "inf"}, "", "uncertainty_coef"), ({}, "?method=median", "method")):
        path = "/get_reward" + query if query else "/v1/score"
        payload = {"query": [prompts[0] + " blue"], "prompts": prompts} if query else {"items": ITEMS[:1], **body}
        bad = served.post(path, payload)
        assert bad.status_code == 422 and field in bad.json()["field"], bad.text
    assert served.post("/v1/score", {"items": ITEMS[:1]}).status_code == 200  # and it keeps serving


BAD = [  # (body or raw bytes, status, field)
    (b'{"items": [', 422, "body"),
    (b"just text", 422, "body"),
    ({"items": [{"prompt": "p"}]}, 422, "items[0].response"),
    ({"items": [{"prompt": "p", "response": 5}]}, 422, "items[0].response"),
    ({"items": [{"prompt": "p", "response": "r", "colour": "x"}]}, 422, "items[0].colour"),
    ({"items": []}, 422, "items"),
    ({"items": [{"prompt": "p", "response": "r"}] * 9}, 413, "items"),
    ({"items": [{"prompt": "p", "response": "r", "images": ["/etc/passwd"]}]}, 422, "items[0].images[0]"),
    ({"items": [{"prompt": "p", "response": "r", "images": ["http://127.0.0.1:1/x.png"]}]}, 422, "items[0].images[0]"),
    ({"items": [{"prompt": "p", "response": "r", "images": [b64(b"\x89PNG\r\n broken")]}]}, 422, "items[0].images[0]"),
    ({"items": [{"prompt": "p", "response": "r", "images": [b64(huge_png(1500))]}]}, 413, "items[0].images[0]"),
    ({"items": [{"prompt": "p", "response": "r" * 2001}]}, 413, "items[0].response"),
    ({"items": [{"prompt": [{"role": "user", "content": [{"type": "image"}]}], "response": "r"}]}, 422,
     "items[0].images"),
    ({"pairs": [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 5}, 413, "pairs"),
    (b"x" * 2_000_001, 413, "body"),
]


def _verl_sample(tokenizer, response: str, truth: str, extra_info: dict):
    """One rollout as veRL's reward loop holds it (a DataProto of one: response ids, mask, non-tensor fields)."""
    import numpy as np
    import torch
    from verl import DataProto

    ids = torch.tensor([tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.pad_token_id] * 3])
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    return DataProto.from_dict(tensors={"responses": ids, "attention_mask": mask}, non_tensors={
        "data_source": np.array(["vqa"], dtype=object), "reward_model": np.array([{"ground_truth": truth}]),
        "extra_info": np.array([extra_info], dtype=object)})


@pytest.mark.parametrize("name", ["compute_score", "compute_score_async"])
def test_verl_reward_loop_scores_through_the_endpoint(served, offline, processor, name):
    """veRL's own code (0.9.1: the reward function loader and the reward loop's naive manager) calls our
    reward function, sync or awaited, once per sample: the image comes from the chat veRL's agent loop puts in
    extra_info["raw_prompt"] (a PIL image), the hybrid score from the ground truth."""
    import asyncio
    import io

    import numpy as np
    from omegaconf import OmegaConf
    from PIL import Image

    naive = pytest.importorskip("verl.experimental.reward_loop.reward_manager.naive",
                                reason="peers' reward code: pip install --no-deps verl==0.9.1 (as .ci/run does)")
    from verl.trainer.ppo.reward import get_custom_reward_fn

    import mrm_ray.rl.verl as ours

    config = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": ours.__file__, "name": name, "reward_kwargs": {"url": served.url, "token": TOKEN,
                                                               "reward": "hybrid"}}}})
    manager = naive.NaiveRewardManager(config, processor.tokenizer, get_custom_reward_fn(config))
    assert manager.is_async_reward_score is (name == "compute_score_async")
    image = Image.open(io.BytesIO(RED))
    raw_prompt = [{"role": "user", "content": [{"type": "image", "image": image},
                                               {"type": "text", "text": "What colour is the square?"}]}]

    async def both():
        return await asyncio.gather(
            manager.run_single(_verl_sample(processor.tokenizer, "blue", "red", {"raw_prompt": raw_prompt})),
            manager.run_single(_verl_sample(processor.tokenizer, "so \\boxed{4}", "4",
                                            {"question": "What is 2+2?"})))

    image_out, math_out = manager.loop.run_until_complete(both())  # the loop veRL's worker runs it on
    expected = np.mean([s.score_items([{"prompt": [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "What colour is the square?"}]}], "images": [RED],
        "response": "blue"}])[0] for s in offline[:2]])
    info = image_out["reward_extra_info"]
    assert info["model_reward"] == pytest.approx(expected, abs=1e-4)
    assert image_out["reward_score"] == pytest.approx(1 / (1 + math.exp(-expected)), abs=1e-4)  # "blue" != "red"
    assert math_out["reward_score"] == 1.0  # \boxed{4} matches the ground truth
    assert set(info) == {"score", "model_reward", "ensemble_std", "score/tiny-a", "score/tiny-b"}


def test_verl_legacy_batch_call(served, offline):
    """The legacy batch reward manager's call (plural arguments): one dict per response, in order."""
    import numpy as np

    from mrm_ray.rl.verl import compute_score

    solutions = ["so \\boxed{4}", "blue"]
    extra = [{"question": "What is 2+2?"}, {"prompt": "What colour is the square?", "images": [b64(RED)]}]
    out = compute_score(data_sources=np.array(["math", "vqa"], dtype=object),
                        solution_strs=np.array(solutions, dtype=object),
                        ground_truths=np.array(["4", "red"], dtype=object), extra_infos=np.array(extra, dtype=object),
                        url=served.url, token=TOKEN, reward="hybrid")
    expected = [np.mean([s.score_items([{"prompt": p, "images": im, "response": r}])[0] for s in offline[:2]])
                for p, im, r in (("What is 2+2?", [], solutions[0]), ("What colour is the square?", [RED], "blue"))]
    assert out[0]["score"] == 1.0 and out[0]["model_reward"] == pytest.approx(expected[0], abs=1e-4)
    assert out[1]["score"] == pytest.approx(1 / (1 + math.exp(-expected[1])), abs=1e-4)
    assert all(set(o) == {"score", "model_reward", "ensemble_std", "score/tiny-a", "score/tiny-b"} for o in out)
    # reward_kwargs.method: the conservative aggregate, its disagreement and the members' scores in veRL's extra info
    from mrm_ray.ensemble import aggregate

    uwo = compute_score(data_sources=["math"], solution_strs=solutions[:1], ground_truths=[None],
                        extra_infos=extra[:1], url=served.url, token=TOKEN, reward="model", method="uwo",
                        uncertainty_coef=1.0)[0]
    raw = np.array([[s.score_items([{"prompt": "What is 2+2?", "images": [], "response": solutions[0]}])[0]]
                    for s in offline[:2]])
    want = aggregate(raw, method="uwo", uncertainty_coef=1.0, means=[s.score_mean for s in offline[:2]],
                     stds=[s.score_std for s in offline[:2]])
    assert uwo["score"] == uwo["model_reward"] == pytest.approx(float(want.reward[0]), abs=1e-4)
    assert uwo["ensemble_std"] == pytest.approx(float(want.std[0]), abs=1e-4)
    assert [uwo["score/tiny-a"], uwo["score/tiny-b"]] == pytest.approx(raw[:, 0].tolist(), abs=1e-4)
    with pytest.raises(ValueError, match="no prompt"):
        compute_score(data_sources=["x"], solution_strs=["y"], ground_truths=["z"], extra_infos=[{}], url=served.url,
                      token=TOKEN)


def test_every_bad_input_gets_its_4xx_and_the_server_keeps_serving(served):
    for body, status, field in BAD:
        path = "/v1/compare" if isinstance(body, dict) and "pairs" in body else "/v1/score"
        if isinstance(body, bytes):
            response = requests.post(served.url + path, data=body, timeout=60,
                                     headers={"Content-Type": "application/json", **AUTH})
        else:
            response = served.post(path, body)
        assert response.status_code == status, (field, response.text)
        error = response.json()
        assert error["field"] == field and error["error"], error
        good = served.post("/v1/score", {"items": ITEMS[:1]})
        assert good.status_code == 200, good.text
    for deadline in ("soon", "-1", "nan"):
        response = served.post("/v1/score", {"items": ITEMS[:1]}, headers={**AUTH, "X-Request-Timeout": deadline})
        assert response.status_code == 422 and response.json()["field"] == "headers.X-Request-Timeout"
    assert served.post("/v1/score", {"items": ITEMS[:1]}, headers={**AUTH, "X-Request-Timeout": "30"}).ok


def test_a_streamed_body_over_the_limit_is_refused_without_content_length(served):
    """A chunked body declares no length: the limit counts what arrives (2 MB here)."""
    def chunks():
        yield b'{"items": [{"prompt": "'
        for _ in range(300):
            yield b"x" * 10_000
        yield b'", "response": "y"}]}'

    response = requests.post(served.url + "/v1/score", data=chunks(), timeout=60,
                             headers={"Content-Type": "application/json", **AUTH})
    assert response.status_code == 413 and response.json()["field"] == "body", response.text
    small = (b'{"items": [{"prompt": "hi", "response": "yo"}]}',)  # streamed and under the limit: served
    response = requests.post(served.url + "/v1/score", data=iter(small), timeout=60,
                             headers={"Content-Type": "application/json", **AUTH})
    assert response.status_code == 200 and len(response.json()["results"]) == 1, response.text


def test_concurrent_requests_are_batched(served):
    before = {m["name"]: m["stats"]["max_batch_items"] for m in served.models()["members"]}

    def one(i):  # as every client must: a shed request (503 + Retry-After) is sent again after it
        for _ in range(30):
            response = served.post("/v1/score", {"items": [{"prompt": f"question {i}?", "response": "answer"}]})
            if response.status_code != 503 or "Retry-After" not in response.headers:
                return response.status_code
            time.sleep(float(response.headers["Retry-After"]))
        return 503

    # 24 at once: more than the ingress admits (the members' batch capacity, 16), so some are shed and retried
    with ThreadPoolExecutor(24) as pool:
        assert set(pool.map(one, range(48))) == {200}
    stats = {m["name"]: m["stats"] for m in served.models()["members"]}
    assert all(s["max_batch_items"] > 1 for s in stats.values()), (before, stats)
    schema = requests.get(served.url + "/openapi.json", timeout=30).json()
    assert {"/v1/score", "/v1/compare", "/get_reward", "/v1/models", "/healthz"} <= set(schema["paths"])


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(url, timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _total(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, tags), v in samples.items() if n == name and labels.items() <= dict(tags).items())


def test_the_app_exports_its_metrics_on_rays_prometheus_endpoint(served):
    """Requests and items by route and status, shed requests, batch sizes, member latency and scores, and the
    members' disagreement, tagged with the app and member, read back from the node's metrics endpoint."""
    ok = served.post("/v1/score", {"items": [{"prompt": "metrics?", "responses": ["a", "b", "c"]}]})
    assert ok.status_code == 200, ok.text
    too_many = served.post("/v1/score", {"items": [{"prompt": "q?", "response": "a"}] * 9})  # max_items is 8
    assert too_many.status_code == 413, too_many.text
    app, members = served.config["applications"][0]["name"], [m["name"] for m in served.models()["members"]]
    deadline, samples = time.time() + 90, {}
    while time.time() < deadline:  # Ray's agent exports every few seconds
        samples = _scrape(served.head.metrics_url)
        if (_total(samples, "ray_mrm_requests_total", app=app, route="score", status="413") >= 1
                and all(_total(samples, "ray_mrm_member_score_count", app=app, member=m) >= 3 for m in members)):
            break
        time.sleep(3)
    ok_requests = _total(samples, "ray_mrm_requests_total", app=app, route="score", status="200")
    assert ok_requests >= 1 and _total(samples, "ray_mrm_requests_total", app=app, route="score", status="413") >= 1
    # a group of 3 responses counts 3 items; the refused request's 9 items are counted under its status
    assert _total(samples, "ray_mrm_items_total", app=app, route="score", status="200") >= ok_requests + 2
    assert _total(samples, "ray_mrm_items_total", app=app, route="score", status="413") >= 9
    assert _total(samples, "ray_mrm_disagreement_count", app=app) >= 3
    for m in members:
        batches = _total(samples, "ray_mrm_member_batch_items_count", app=app, member=m)
        assert batches >= 1 and _total(samples, "ray_mrm_member_latency_seconds_count", app=app, member=m) == batches
        assert _total(samples, "ray_mrm_member_batch_items_sum", app=app, member=m) >= 3
        assert _total(samples, "ray_mrm_member_score_count", app=app, member=m) >= 3
    dashboard = json.loads((Path(mrm_ray.__file__).parent / "dashboards" / "reward_app.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in ("ray_mrm_requests_total", "ray_mrm_items_total", "ray_mrm_shed_total", "ray_mrm_disagreement",
                 "ray_mrm_member_batch_items", "ray_mrm_member_latency_seconds", "ray_mrm_member_score"):
        assert name in exprs, name


HANDLE_SCRIPT = """
import asyncio, base64, json, sys
import ray
from mrm_ray.serve.client import RewardClient, RewardError
from mrm_ray.serve.handle_client import AsyncHandleRewardClient, HandleRewardClient

url, app, token, image = sys.argv[1:5]
ray.init(address=sys.argv[5], log_to_driver=False)
items = [{"prompt": "What colour is it?", "images": [base64.b64decode(image)], "response": r} for r in ("red", "green")]
items += [{"prompt": "Say hi.", "response": "hi"}, {"prompt": "Say hi.", "response": "hello there"}]
pairs = [{"prompt": "Say hi.", "chosen": "hi", "rejected": "no"}]
http, handle = RewardClient(url, token=token), HandleRewardClient(app, token=token)
out = {"http": http.score(items, method="uwo"), "handle": handle.score(items, method="uwo"),
       "http_compare": http.compare(pairs), "handle_compare": handle.compare(pairs),
       "models": sorted(m["name"] for m in handle.models()["members"])}
async def run():
    async with AsyncHandleRewardClient(app, token=token) as client:
        return await asyncio.gather(*(client.score(items) for _ in range(8)))
out["async"] = asyncio.run(run())
out["http_mean"] = http.score(items)
for name, call in {"too_many": lambda: handle.score([{"prompt": f"Say {i}.", "response": "hi"} for i in range(9)]),
                   "bad_method": lambda: handle.score(items, method="nope"),
                   "no_token": lambda: HandleRewardClient(app).score(items)}.items():
    try:
        call()
        out[name] = None
    except RewardError as exc:
        out[name] = [exc.status, str(exc)]
print("RESULT " + json.dumps(out))
"""


def test_a_job_on_the_cluster_scores_through_the_app_handle_as_over_http(served):
    """HandleRewardClient / AsyncHandleRewardClient (DeploymentHandle, no HTTP) give the HTTP client's results,
    grouping and aggregation, and its 4xx for bad input (naming the field) and a missing token."""
    app = served.config["applications"][0]["name"]
    out = subprocess.run([str(BIN / "python"), "-c", HANDLE_SCRIPT, served.url, app, TOKEN, b64(RED),
                          served.head.gcs_address], env=ray_env(), capture_output=True, text=True, timeout=300)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, out.stdout[-3000:] + out.stderr[-3000:]
    r = json.loads(line[len("RESULT "):])

    def rewards(results):
        return [(x["reward"], x["std"], x["method"], x["scores"]) for x in results]

    assert len(r["handle"]) == 4 and rewards(r["handle"]) == rewards(r["http"])
    assert all(x["method"] == "uwo" for x in r["handle"])
    assert r["handle_compare"] == r["http_compare"]
    assert r["models"] == sorted(m["name"] for m in served.models()["members"])
    assert all(rewards(a) == rewards(r["http_mean"]) for a in r["async"])
    assert r["too_many"][0] == 413 and "items" in r["too_many"][1]
    assert r["bad_method"][0] == 422 and "method" in r["bad_method"][1]
    assert r["no_token"][0] == 401


def test_killed_member_replica_is_replaced(served):
    (pid,) = served.head.alive_actor_pids("ServeReplica:reward:member-tiny-b")
    psutil.Process(pid).kill()
    deadline, recovered = time.time() + 180, False
    while time.time() < deadline and not recovered:
        time.sleep(1)
        pids = served.head.alive_actor_pids("ServeReplica:reward:member-tiny-b")
        recovered = bool(pids) and pid not in pids and served.post("/v1/score", {"items": ITEMS}).status_code == 200
    assert recovered, "no working replacement replica within 180 s"
    for _ in range(5):
        response = served.post("/v1/score", {"items": ITEMS})
        assert response.status_code == 200 and set(response.json()["results"][0]["scores"]) == {"tiny-a", "tiny-b"}


class Load:
    """`clients` concurrent one-item clients (one aiohttp session, on their own thread) scoring until stopped:
    each 200 is kept with its send and answer times and the member versions it names; a 503 with
    Retry-After (shed) is counted and sent again after it, as clients must; anything else is a failure."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.clients = url, clients
        self.answers: list[tuple[float, float, dict]] = []  # (sent, answered, members)
        self.shed, self.failures = 0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: __import__("asyncio").run(self._run()), daemon=True)

    async def _client(self, session, i: int) -> None:
        import asyncio

        body = {"items": [{"prompt": f"Client {i}: is the sky blue?", "response": "Yes."}]}
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                async with session.post(self.url + "/v1/score", json=body, headers=AUTH) as response:
                    if response.status == 200:
                        self.answers.append((sent, time.monotonic(), (await response.json())["members"]))
                        continue
                    text = await response.text()
                    if response.status == 503 and "Retry-After" in response.headers:
                        self.shed += 1
                        await asyncio.sleep(float(response.headers["Retry-After"]))
                        continue
                    self.failures.append(f"{response.status}: {text[:300]}")
            except Exception as exc:  # a dropped connection or a timeout is a failure too
                self.failures.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.5)

    async def _run(self) -> None:
        import asyncio

        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120),
                                         connector=aiohttp.TCPConnector(limit=self.clients + 16)) as session:
            await asyncio.gather(*(self._client(session, i) for i in range(self.clients)))

    def __enter__(self) -> "Load":
        self.started = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=180)

    def wait_for(self, answers: int, *, sent_after: float = 0.0, timeout: float = 180) -> None:
        """Until `answers` requests sent after `sent_after` (monotonic) have been answered."""
        def count() -> int:
            return sum(sent > sent_after for sent, _, _ in list(self.answers))

        deadline = time.time() + timeout
        while count() < answers and time.time() < deadline:
            time.sleep(0.5)
        assert count() >= answers, f"{count()} answers, {self.shed} shed, {self.failures[:3]}"


def _update(served: Served, config: dict) -> tuple[subprocess.CompletedProcess, float, float]:
    """`mrm-ray serve --config FILE --update` against the served cluster; (the run, its start, when it reported
    done)."""
    started, path = time.monotonic(), served.tmp / f"update-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run([str(BIN / "mrm-ray"), "serve", "--config", str(path), "--update"], capture_output=True,
                         text=True, timeout=600, env={**ray_env(), "RAY_ADDRESS": served.head.gcs_address})
    out.stderr = "\n".join(x for x in out.stderr.splitlines() if " INFO " not in x)  # replicas' logs
    return out, started, time.monotonic()


def test_members_change_under_load_and_no_request_fails(served, offline):
    """64 concurrent clients score while `mrm-ray serve --update` adds a member, re-weights and changes the
    method, then removes it and swaps another's checkpoint: no request fails (shed ones are retried), every
    answer names the member versions that scored it, and once an update reports done, requests sent after
    it are scored by the new members only. An update naming a missing checkpoint or an unknown method is
    refused before anything changes, naming the setting, and the app keeps serving its members."""
    versions = [checkpoint_version(p) for p in served.checkpoints]
    first = {"tiny-a": versions[0], "tiny-b": versions[1]}
    assert {m["name"]: m["version"] for m in served.models()["members"]} == first
    grown = yaml.safe_load(yaml.safe_dump(served.config))
    args = grown["applications"][0]["args"]
    args["members"].append({"name": "tiny-c", "path": str(served.checkpoints[2])})
    args["members"][0]["weight"] = 2.0
    args.update(method="uwo", uncertainty_coef=0.5)
    shrunk = yaml.safe_load(yaml.safe_dump(served.config))
    shrunk["applications"][0]["args"]["members"][0]["path"] = str(served.checkpoints[2])
    with Load(served.url, clients=64) as load:
        load.wait_for(200)
        out, _, grown_at = _update(served, grown)
        assert out.returncode == 0 and "update done" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]
        load.wait_for(200, sent_after=grown_at)
        out, shrinking_at, shrunk_at = _update(served, shrunk)
        assert out.returncode == 0 and "update done" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]
        load.wait_for(200, sent_after=shrunk_at)
    print(f"updates took {grown_at - load.started:.0f} s (from the load's start) and {shrunk_at - shrinking_at:.0f} s;"
          f" {len(load.answers)} answers, {load.shed} shed and retried")
    assert load.failures == [], (len(load.failures), load.failures[:5])
    known = set(versions)
    assert all(members and set(members.values()) <= known for _, _, members in load.answers)
    after_grown = [m for sent, answered, m in load.answers if grown_at < sent and answered < shrinking_at]
    after_shrunk = [m for sent, _, m in load.answers if sent > shrunk_at]
    assert len(after_grown) >= 100 and len(after_shrunk) >= 100, (len(after_grown), len(after_shrunk))
    assert all(m == {**first, "tiny-c": versions[2]} for m in after_grown), after_grown[:3]
    assert all(m == {"tiny-a": versions[2], "tiny-b": versions[1]} for m in after_shrunk), after_shrunk[:3]
    response = served.post("/v1/score", {"items": ITEMS[:1]}).json()
    assert response["results"][0]["method"] == "mean"
    assert response["results"][0]["scores"]["tiny-a"] == pytest.approx(offline[2].score_items(DECODED[:1])[0], abs=1e-4)
    served.config = shrunk
    for setting, bad in (("path", {"path": str(served.tmp / "no-such-checkpoint")}), ("method", {"method": "nope"})):
        broken = yaml.safe_load(yaml.safe_dump(shrunk))
        if "path" in bad:
            broken["applications"][0]["args"]["members"][1].update(bad)
        else:
            broken["applications"][0]["args"].update(bad)
        out, _, _ = _update(served, broken)
        assert out.returncode == 2 and setting in out.stderr, out.stdout[-2000:] + out.stderr[-2000:]
    assert {m["name"]: m["version"] for m in served.models()["members"]} == {"tiny-a": versions[2],
                                                                              "tiny-b": versions[1]}


@pytest.fixture(scope="module")
def ensemble_app(served, s3, tmp_path_factory, hf_seq_cls):
    """`ray job submit ... jobs/serve.py --ensemble s3://...`: a second app beside the main one, without auth
    (OpenRLHF's client sends no token), members loaded from the bucket (paths relative to the ensemble file),
    with small queues: 4 member calls in flight and 8 waiting, 200 HTTP requests in the ingress and 100 waiting.
    A mixed ensemble: the vision-language member (Qwen2.5-VL) and, for text, a text-only Qwen3 reward model as
    transformers saves one (`Qwen3ForSequenceClassification`: no reward_config.json, a linear `score` head)."""
    from mrm_ray import storage
    from mrm_ray.config import EnsembleConfig, EnsembleMember
    from mrm_ray.ensemble import save_ensemble
    from mrm_ray.model.checkpoints import REWARD_CONFIG

    tmp_path = tmp_path_factory.mktemp("ensemble-app")
    bucket = s3.bucket()
    text_only = hf_seq_cls
    storage.upload(served.checkpoints[0], f"{bucket}/members/vl", last=REWARD_CONFIG)
    storage.upload(text_only, f"{bucket}/members/text", last="config.json")
    local = save_ensemble(EnsembleConfig(method="z_mean", members=[
        EnsembleMember(name="vl", path="members/vl", score_mean=0.5, score_std=2.0),
        EnsembleMember(name="text", path="members/text", modalities=("text",))]),
        tmp_path / "ensemble.yaml")
    ensemble = storage.upload(local, f"{bucket}/ensemble.yaml")
    config, plain = tmp_path / "serve.yaml", yaml.safe_load(yaml.safe_dump(served.config))
    plain["applications"][0].pop("runtime_env")  # no token: this app serves without auth
    # queues sized so that the load test's burst overflows them (the tests before it stay within)
    plain["applications"][0]["args"]["serving"].update(max_batch_size=4, max_ongoing_requests=4,
                                                       max_queued_requests=8)
    plain["applications"][0]["args"]["ingress"].update(max_ongoing_requests=200, max_queued_requests=100)
    config.write_text(yaml.safe_dump(plain))
    result = served.head.submit("jobs/serve.py", "--config", str(config), "--ensemble", str(ensemble),
                                "--name", "ens", "--route-prefix", "/ens", timeout=300)
    return {"url": served.url + "/ens", "log": result.stdout + result.stderr, "text_only": text_only}


def test_job_deploys_an_ensemble_file_from_a_bucket_with_text_routing(served, ensemble_app, offline):
    """The app above: text-only items also reach the text-only member, image items the vision member alone."""
    import asyncio

    from mrm_ray.serve.client import AsyncRewardClient, RewardClient

    log = ensemble_app["log"]
    assert job_status(log) == "SUCCEEDED" and f"serving at {served.url}/ens" in log, log[-3000:]

    client = RewardClient(ensemble_app["url"])
    text, image = client.score([ITEMS[0], {**ITEMS[1], "images": [RED]}])  # raw bytes are inlined by the client
    assert set(text["scores"]) == {"vl", "text"} and set(image["scores"]) == {"vl"}
    vl, txt = offline[0].score_items(DECODED[:2]), Scorer(str(ensemble_app["text_only"])).score_items(DECODED[:1])
    assert text["reward"] == pytest.approx(((vl[0] - 0.5) / 2.0 + txt[0]) / 2, abs=1e-4)  # z: override, own stats
    # the sequence classifier's score is the one transformers' own class gives the same conversation
    assert text["scores"]["text"] == pytest.approx(transformers_score(ensemble_app["text_only"], DECODED[0]["prompt"],
                                                                     DECODED[0]["response"]),
                                                   abs=1e-4)
    assert image["reward"] == pytest.approx((vl[1] - 0.5) / 2.0, abs=1e-4) and image["std"] == 0.0
    assert [m["modalities"] for m in client.models()["members"]] == [["image", "text"], ["text"]]

    async def many():
        async with AsyncRewardClient(ensemble_app["url"]) as aclient:
            return await asyncio.gather(*(aclient.score([ITEMS[0]]) for _ in range(8)))

    assert all(r[0]["reward"] == pytest.approx(text["reward"], abs=1e-4) for r in asyncio.run(many()))


def _models_when_up(client, app: str, timeout: float = 300) -> dict:
    """The app's /v1/models once it answers (its replicas start meanwhile)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return client.models()
        except Exception:  # replicas still starting
            time.sleep(2)
    raise AssertionError(f"the {app} app never answered /v1/models")


def test_a_member_of_every_family_behind_one_endpoint(served, family_rewards, ray_cluster, tmp_path):
    """`deploy_members` (what `mrm-ray grpo` does with reward.members) of one reward model per family not
    served above (Qwen2.5-VL and Qwen3 are `ensemble_app`'s): the text-only Qwen2 gets the text item only,
    each member scores as it does offline, the reward is the mean."""
    from ray import serve

    from mrm_ray.serve.client import RewardClient
    from mrm_ray.serve.deploy import deploy_members

    config = yaml.safe_load(yaml.safe_dump(served.config))
    app = config["applications"][0]
    app.pop("runtime_env")  # no token
    app["args"]["serving"]["num_cpus"] = app["args"]["ingress"]["num_cpus"] = 0.1  # beside the two apps above
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    family_rewards = {f: p for f, p in family_rewards.items() if f != "qwen3"}
    paths = [str(p) for p in family_rewards.values()]
    try:
        url = deploy_members(paths, tmp_path / "serve.yaml", name="families")
        client = RewardClient(url)
        models = _models_when_up(client, "families")
        names = {f: f.replace("_", "-") for f in family_rewards}
        text_only = {names["qwen2"]}
        assert {m["name"]: m["modalities"] for m in models["members"]} == {
            n: ["text"] if n in text_only else ["image", "text"] for n in names.values()}
        text, image = client.score([ITEMS[0], {**ITEMS[1], "images": [RED]}])
        assert set(text["scores"]) == set(names.values()) and set(image["scores"]) == set(names.values()) - text_only
        for family, path in family_rewards.items():
            expected = Scorer(str(path)).score_items(DECODED[:2] if names[family] not in text_only else DECODED[:1])
            assert text["scores"][names[family]] == pytest.approx(expected[0], abs=1e-4)
            if names[family] not in text_only:
                assert image["scores"][names[family]] == pytest.approx(expected[1], abs=1e-4)
        for result in (text, image):
            assert result["reward"] == pytest.approx(sum(result["scores"].values()) / len(result["scores"]), abs=1e-4)
    finally:
        serve.delete("families")


def test_judges_beside_a_scalar_member_behind_one_endpoint(served, reward_checkpoints, tiny_checkpoint, ray_cluster,
                                                          tmp_path):
    """Judge members (`kind: judge`) of each mode beside a reward model: a verdict judge's score equals the
    judge in-process and joins the mean; a pairwise judge compares pairs and gives single responses no score;
    a critique that runs out of time gives no score with its reason, and the other members' scores stand."""
    from ray import serve

    from mrm_ray.config import JudgeConfig, ServeTarget, load
    from mrm_ray.model.judge import Judge
    from mrm_ray.serve.client import RewardClient
    from mrm_ray.serve.deploy import deploy

    config = yaml.safe_load(yaml.safe_dump(served.config))
    app = config["applications"][0]
    app.pop("runtime_env")  # no token
    app["args"]["serving"]["num_cpus"] = app["args"]["ingress"]["num_cpus"] = 0.1
    slow = {"mode": "critique", "max_critique_tokens": 100_000, "critique_timeout_s": 0.01}
    app["args"]["members"] = [
        {"name": "rm", "path": str(reward_checkpoints[0])},
        {"name": "verdict", "kind": "judge", "path": str(tiny_checkpoint)},
        {"name": "pairwise", "kind": "judge", "path": str(tiny_checkpoint), "judge": {"mode": "pairwise"}},
        {"name": "slow", "kind": "judge", "path": str(tiny_checkpoint), "judge": slow}]
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    target = load(ServeTarget, tmp_path / "serve.yaml", kind="serve", name="judges", route_prefix="/judges")
    try:
        client = RewardClient(deploy(target))
        models = _models_when_up(client, "judges")
        kinds = {m["name"]: (m["kind"], (m.get("judge") or {}).get("mode")) for m in models["members"]}
        assert kinds == {"rm": ("scalar", None), "verdict": ("judge", "verdict"), "pairwise": ("judge", "pairwise"),
                         "slow": ("judge", "critique")}
        scalar, verdict = Scorer(str(reward_checkpoints[0])), Judge(str(tiny_checkpoint))
        for result, item in zip(client.score(ITEMS[:2]), DECODED[:2]):
            assert set(result["scores"]) == {"rm", "verdict"}
            assert result["scores"]["rm"] == pytest.approx(scalar.score_items([item])[0], abs=1e-4)
            assert result["scores"]["verdict"] == pytest.approx(verdict.score_items([item])[0], abs=1e-4)
            assert result["reward"] == pytest.approx(sum(result["scores"].values()) / 2, abs=1e-4)
            assert "timed out" in result["unscored"]["slow"] and "pairwise" in result["unscored"]["pairwise"]
        pair = {"prompt": "What colour is the square?", "images": [b64(RED)], "chosen": "red", "rejected": "blue"}
        (compared,) = client.compare([pair])
        decoded = {**pair, "images": [RED]}
        pairwise = Judge(str(tiny_checkpoint), JudgeConfig(mode="pairwise")).compare_orders([decoded])[0][0]
        assert compared["margins"]["pairwise"] == pytest.approx(pairwise, abs=1e-4)
        assert compared["margins"]["rm"] == pytest.approx(float.__sub__(*scalar.score_pairs([decoded])[0]), abs=1e-4)
        assert set(compared["margins"]) == {"rm", "verdict", "pairwise"} and "timed out" in compared["unscored"]["slow"]
    finally:
        serve.delete("judges")


def test_bearer_token_from_the_environment(served):
    """The main app took its token from its runtime_env; the ensemble app above ran without one."""
    assert served.post("/v1/score", {"items": ITEMS[:1]}, headers={}).status_code == 401
    wrong = served.post("/v1/score", {"items": ITEMS[:1]}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and TOKEN not in wrong.text
    assert served.post("/get_reward", {"query": ["a b"], "prompts": ["a"]}, headers={}).status_code == 401
    assert served.post("/v1/score", {"items": ITEMS[:1]}).status_code == 200
    assert requests.get(served.url + "/v1/models", timeout=30).status_code == 401
    assert requests.get(served.url + "/healthz", timeout=30).status_code == 200  # probes need no token


def _held(messages: list[dict]) -> list[dict]:
    """The conversation a Qwen2.5-VL-templated query holds: the template's default system turn is in its text, so
    a member whose template has no default (the text-only Qwen3 member) sees it as an explicit system turn."""
    return [{"role": "system", "content": "You are a helpful assistant."}, *messages]


def _templated(processor, messages: list[dict], response: str) -> tuple[str, str]:
    """(prompt, query) as OpenRLHF builds them: the chat-templated prompt, and the decode of prompt + response
    tokens (the response ending with its end of turn) with the special tokens kept."""
    tokenizer = processor.tokenizer
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt + response + "<|im_end|>", add_special_tokens=False)["input_ids"]
    return prompt, tokenizer.decode(ids, skip_special_tokens=False)


def test_openrlhf_own_client_gets_the_reward_of_the_conversation_its_query_holds(ensemble_app, processor):
    """OpenRLHF's own request code (its SingleTurnAgentExecutor's HTTP path, openrlhf 0.11.2) against the live
    endpoint: the templated query is scored as the same conversation sent as messages, not wrapped in a second
    chat template; a query with image placeholders and no pixels gets a 422 saying how to send images."""
    import asyncio

    agent = pytest.importorskip("openrlhf.utils.agent", reason="peers' client code: pip install --no-deps "
                                                                "openrlhf==0.11.2 (as .ci/run does)")
    url = ensemble_app["url"]
    messages = [{"role": "user", "content": "Is the sky blue on a clear day?"}]
    prompt, query = _templated(processor, messages, "Yes, it is.")
    executor = agent.SingleTurnAgentExecutor(f"{url}/get_reward")
    (reply,) = asyncio.run(executor._fetch_rewards_via_http([query], [prompt], [""]))
    direct = requests.post(f"{url}/v1/score", json={"items": [{"prompt": _held(messages), "response": "Yes, it is."}]},
                           timeout=60).json()["results"][0]
    assert reply["rewards"] == pytest.approx([direct["reward"]], abs=1e-4) and reply["scores"] == reply["rewards"]
    wrapped = requests.post(f"{url}/v1/score", json={"items": [{"prompt": prompt, "response": "Yes, it is."}]},
                            timeout=60).json()["results"][0]
    assert abs(wrapped["reward"] - direct["reward"]) > 1e-3  # what scoring the text as a plain prompt gives

    image_prompt, image_query = _templated(processor, [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "What colour is the square?"}]}], "red")
    assert "<|vision_start|>" in image_query
    refused = requests.post(f"{url}/get_reward", json={"query": [image_query], "prompts": [image_prompt],
                                                       "labels": [""]}, timeout=60)
    assert refused.status_code == 422 and refused.json()["field"] == "query[0]"
    assert "image placeholder" in refused.text and "/v1/score" in refused.text


class StandInEngine:
    """What OpenRLHF's executors call on its vLLM engine (`await generate(token_ids, sampling_params,
    multi_modal_data=)`), answering each call with the next of `responses`, tokenized."""

    def __init__(self, tokenizer, responses: list[str]) -> None:
        self.tokenizer, self.responses, self.calls = tokenizer, list(responses), []

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        from types import SimpleNamespace

        self.calls.append((list(prompt_token_ids), multi_modal_data))
        text = self.responses[len(self.calls) - 1]
        ids = self.tokenizer(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, text=text, finish_reason="stop",
                                                        logprobs=None)])


def test_openrlhf_agent_executor_scores_image_rollouts_as_one_group(ensemble_app, processor, monkeypatch, tmp_path):
    """Our agent file, loaded as OpenRLHF loads `--train.agent_func_path` (a subclass of its
    AgentExecutorBase, built without arguments, configured by the environment), run as OpenRLHF's engine runs
    it (n concurrent `execute`s for one prompt and its images) over a stand-in generation engine: each
    rollout's reward is the /v1/score reward of its prompt (chat turns, the image part in place), image (a
    dataset's file path, read on the rollout side) and response; the three responses went as one request (one member call); the label is the reference."""
    import asyncio
    import importlib.util
    from types import SimpleNamespace

    agent = pytest.importorskip("openrlhf.utils.agent", reason="peers' agent API: pip install --no-deps "
                                                                "openrlhf==0.11.2 (as .ci/run does)")
    import mrm_ray.rl.openrlhf_agent as ours

    url = ensemble_app["url"]
    monkeypatch.setenv("MRM_REWARD_URL", url)
    monkeypatch.setenv("MRM_GROUP_SIZE", "3")
    monkeypatch.setenv("MRM_REWARD", "hybrid")
    spec = importlib.util.spec_from_file_location("agent_module", ours.__file__)  # OpenRLHF's loader, verbatim
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert issubclass(module.AgentExecutor, agent.AgentExecutorBase)
    executor = module.AgentExecutor()

    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in prompt  # as OpenRLHF's dataset templates it
    responses = ["It is red.", "Green, I think.", "The answer is \\boxed{red}."]
    engine = StandInEngine(processor.tokenizer, responses)
    params = SimpleNamespace(max_tokens=16, logprobs=None)
    image = tmp_path / "red.png"
    image.write_bytes(RED)

    def vl_calls() -> int:
        members = requests.get(f"{url}/v1/models", timeout=60).json()["members"]
        return next(m["stats"]["calls"] for m in members if m["name"] == "vl")

    async def rollouts():  # what OpenRLHF's RolloutRayActor.generate_responses does for num_samples=3
        images = [str(image)]
        return await asyncio.gather(*(executor.execute(prompt=prompt, label="red", sampling_params=params,
                                                       max_length=512, hf_tokenizer=processor, llm_engine=engine,
                                                       images=images) for _ in range(3)))

    before = vl_calls()
    outputs = asyncio.run(rollouts())
    assert vl_calls() - before == 1  # the group went as one request, one member call
    assert all(call[1] and len(call[1]["image"]) == 1 for call in engine.calls)  # the engine got the image
    direct = requests.post(f"{url}/v1/score", json={"reward": "hybrid", "items": [
        {"prompt": messages, "images": [b64(RED)], "response": r, "reference": "red"} for r in responses]},
        timeout=60).json()["results"]
    by_response = {processor.tokenizer.decode(o["observation_tokens"][o["action_ranges"][0][0]:],
                                              skip_special_tokens=True): o for o in outputs}
    assert set(by_response) == set(responses)
    for response, expected in zip(responses, direct):
        output = by_response[response]
        assert output["reward"] == pytest.approx(expected["reward"], abs=1e-4) and output["scores"] == output["reward"]
        assert output["extra_logs"]["model_reward"] == pytest.approx(expected["model_reward"], abs=1e-4)
        # every member's key on every rollout (OpenRLHF stacks them): the text-only member scored no image
        assert output["extra_logs"]["score_vl"] == pytest.approx(expected["scores"]["vl"], abs=1e-4)
        assert math.isnan(output["extra_logs"]["score_text"]) and "text" not in expected["scores"]
        assert output["extra_logs"]["ensemble_std"] == pytest.approx(expected["std"], abs=1e-4)
        assert output["images"] == [str(image)] and output["mm_train_inputs"] is not None
    assert by_response[responses[2]]["reward"] == 1.0 and by_response[responses[1]]["reward"] < 1.0


def test_vllm_style_classify_and_pooling_as_verl_builds_them(ensemble_app, processor):
    """`/classify` and `/pooling` (and their /v1 spellings) take vLLM's request shapes and answer in its
    response shapes: veRL's discriminative-RM request (`input` = chat-templated text, `use_activation: false`,
    read as data[-1].probs[-1]) gets the ensemble's raw reward; chat `messages` with an image_url part score
    the same item as /v1/score; the default activation is the sigmoid, as vLLM's for one label."""
    url = ensemble_app["url"]
    messages = [{"role": "user", "content": "Is the sky blue on a clear day?"}]
    _, query = _templated(processor, messages, "Yes, it is.")
    direct = requests.post(f"{url}/v1/score", json={"items": [{"prompt": _held(messages), "response": "Yes, it is."}]},
                           timeout=60).json()["results"][0]["reward"]
    verl = requests.post(f"{url}/classify", json={"model": "/models/rm", "input": query, "use_activation": False},
                         timeout=60)
    assert verl.status_code == 200, verl.text
    body = verl.json()
    assert body["object"] == "list" and body["id"].startswith("classify-") and body["model"] == "/models/rm"
    assert body["data"][-1]["probs"][-1] == pytest.approx(direct, abs=1e-4) and body["data"][0]["num_classes"] == 1
    assert set(body["usage"]) >= {"prompt_tokens", "total_tokens"}
    several = requests.post(f"{url}/v1/classify", json={"input": [query, query]}, timeout=60).json()
    assert [d["index"] for d in several["data"]] == [0, 1]
    assert several["data"][1]["probs"] == pytest.approx([1 / (1 + math.exp(-direct))], abs=1e-4)

    image_messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(RED)}},
                                                   {"type": "text", "text": "What colour is the square?"}]}]
    scored = requests.post(f"{url}/v1/score", json={"items": [{"prompt": image_messages, "response": "red"}]},
                           timeout=60).json()["results"][0]
    assert set(scored["scores"]) == {"vl"}  # an image item: the vision member alone
    for route in ("/pooling", "/v1/pooling"):
        pooled = requests.post(f"{url}{route}", json={
            "messages": [*image_messages, {"role": "assistant", "content": "red"}], "use_activation": False,
            "encoding_format": "float"}, timeout=60)
        assert pooled.status_code == 200, pooled.text
        (item,) = pooled.json()["data"]
        assert item["object"] == "pooling" and item["data"] == pytest.approx([scored["model_reward"]], abs=1e-4)
    for bad, field in (({"input": query, "messages": messages}, "input"), ({"messages": messages}, "messages"),
                       ({"input": "plain text, no chat turns"}, "input")):
        refused = requests.post(f"{url}/classify", json=bad, timeout=60)
        assert refused.status_code == 422 and refused.json()["field"] == field, refused.text


def test_a_burst_is_shed_with_retry_after_and_deadlines_drop_work(ensemble_app, served):
    """500 concurrent clients, 2 requests each, against an ingress that holds 300 requests and a member that
    holds 12 calls: every answer is a 200, a 503 with Retry-After (shed at once, not queued, by Serve's proxy
    in front of the ingress and by the ingress in front of the member) or, for requests carrying a deadline,
    a 504; no
    connection hangs; accepted requests' p99 latency stays bounded; the member computed exactly the items of
    the 200s (shed and expired requests cost no forward); a normal request succeeds right after, and our
    client, honouring Retry-After, gets every result under the same burst."""
    import asyncio

    import aiohttp

    from mrm_ray.serve.client import AsyncRewardClient

    url = ensemble_app["url"]
    item = {"prompt": "What colour is the square?", "response": "red", "images": [b64(RED)]}  # the vl member only

    def vl_items() -> int:
        members = requests.get(f"{url}/v1/models", timeout=60).json()["members"]
        return next(m["stats"]["items"] for m in members if m["name"] == "vl")

    async def burst():
        async def client(session, c):
            out = []
            for r in range(2):
                deadline = {0: "0.001", 1: "0.3"}.get((2 * c + r) % 10)  # a fifth of the requests carry one
                headers = {"X-Request-Timeout": deadline} if deadline else {}
                start = time.monotonic()
                async with session.post(f"{url}/v1/score", json={"items": [item]}, headers=headers) as response:
                    body = await response.text()
                    out.append((response.status, time.monotonic() - start, response.headers.get("Retry-After"),
                                deadline, body))
            return out

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=500),
                                         timeout=aiohttp.ClientTimeout(total=120)) as session:
            return [x for c in await asyncio.gather(*(client(session, c) for c in range(500))) for x in c]

    before = vl_items()
    answers = asyncio.run(burst())
    statuses = [a[0] for a in answers]
    assert len(answers) == 1000 and set(statuses) <= {200, 503, 504}, set(statuses)
    shed = [a for a in answers if a[0] == 503]
    assert shed and all(a[2] == "1" for a in shed)  # shed, with Retry-After
    by_member = [a for a in shed if a[4].startswith('{"error":"overloaded, shed')]  # our ingress's answer
    assert by_member and len(by_member) < len(shed)  # and the rest Serve's proxy's, in front of the ingress
    assert all(a[3] for a in answers if a[0] == 504)  # only requests with a deadline time out
    assert any(a[0] == 504 for a in answers if a[3] == "0.001")
    accepted = sorted(a[1] for a in answers if a[0] == 200)
    assert len(accepted) >= 12
    # bounded well below the clients' 120 s timeout: nothing waits in line without end (measured 5.7 s with
    # this module alone, 38 s in the whole suite on 2 cores: a 500-connection burst costs the proxy, not the
    # members, whose queues hold 12 calls); not a speed goal
    p99 = accepted[int(0.99 * (len(accepted) - 1))]
    assert p99 < 90.0, p99
    assert vl_items() - before == statuses.count(200)  # not one forward for a shed or expired request

    assert requests.post(f"{url}/v1/score", json={"items": [item]}, timeout=60).status_code == 200

    async def polite():
        async with AsyncRewardClient(url, max_wait_s=120, max_connections=200) as client:
            return await asyncio.gather(*(client.score([item]) for _ in range(200)))

    results = asyncio.run(polite())
    assert len(results) == 200 and all(r[0]["scores"].keys() == {"vl"} for r in results)
    # every request the ingress shed is counted on the node's metrics endpoint (its agent exports every few s)
    deadline, shed_total = time.time() + 60, 0.0
    while time.time() < deadline and shed_total < len(by_member):
        shed_total = _total(_scrape(served.head.metrics_url), "ray_mrm_shed_total", app="ens", route="score")
        time.sleep(0 if shed_total >= len(by_member) else 3)
    assert shed_total >= len(by_member), (shed_total, len(by_member))
