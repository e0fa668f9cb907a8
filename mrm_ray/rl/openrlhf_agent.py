"""An OpenRLHF agent executor whose rewards come from the served ensemble, images included.

OpenRLHF (0.11) sends a remote reward model text only (`query`, the decode of prompt + response
tokens), so an image rollout cannot be scored through `--reward.remote_url`. Its agent API gets
the prompt's images: this file is an agent for `--train.agent_func_path`. `AgentExecutor`
generates exactly as OpenRLHF's single-turn executor does, then sends the prompt (its chat turns,
image placeholders as image parts), the images and the decoded response to `/v1/score`. The
`n_samples_per_prompt` responses to one prompt, which OpenRLHF generates concurrently on one
engine, go as one request when `MRM_GROUP_SIZE` says how many there are.

    ray job submit --runtime-env-json '{"env_vars": {"MRM_REWARD_URL": "http://HOST:8000",
        "MRM_GROUP_SIZE": "8", "MRM_REWARD": "hybrid"}}' -- python -m openrlhf.cli.train_ppo_ray ... \\
        --rollout.n_samples_per_prompt 8 --data.apply_chat_template \\
        --train.agent_func_path "$(python -c 'import mrm_ray.rl.openrlhf_agent as m; print(m.__file__)')"

Environment (OpenRLHF builds the executor without arguments, so this is the only way in; checked
as config/adapters.py's `OpenRLHFAgentConfig`): MRM_REWARD_URL (required), MRM_SERVE_TOKEN,
MRM_REWARD (`model`, or `hybrid`: the label is the reference answer), MRM_GROUP_SIZE (default 1:
every response alone), MRM_GROUP_WAIT_S (how long a group waits for its last response, default
60), MRM_REWARD_TIMEOUT_S (default 180, OpenRLHF's own), MRM_REWARD_METHOD and MRM_UNCERTAINTY_COEF
(another aggregation than the ensemble's, e.g. `uwo`). `extra_logs` carry the model reward, the members'
disagreement and every member's score, which OpenRLHF logs.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from openrlhf.utils.agent import SingleTurnAgentExecutor

from mrm_ray import chatml
from mrm_ray.config import OpenRLHFAgentConfig
from mrm_ray.model.inputs import image_reference


def _image(ref: Any) -> Any:
    """An OpenRLHF image reference (bytes, base64, a data: URL, a path, a URL, PIL) as the client sends it: a URL
    loaded here, on the rollout worker, as OpenRLHF itself loads it; the rest the client inlines (a local file
    read by it, the server reading none)."""
    from mrm_ray.serve.client import local_image

    ref = local_image(image_reference(ref))
    if isinstance(ref, str) and ref.startswith(("http://", "https://")):
        from openrlhf.utils.vlm_utils import load_images

        loaded = load_images([ref])
        if not loaded:
            raise ValueError(f"cannot load the image {ref[:80]!r}")
        return loaded[0]
    return ref


def reward_item(prompt: str, images: Any, response: str, label: Any, *, hybrid: bool) -> dict:
    """The `/v1/score` item of one rollout: a chat-templated prompt as its turns (the generation prompt's
    empty assistant turn dropped), each image placeholder an image part, the images in order."""
    refs = [im for im in (images if isinstance(images, list) else [images]) if im is not None]
    if chatml.is_chatml(prompt):
        turns = chatml.turns(prompt)
        if turns and turns[-1] == ("assistant", ""):
            turns = turns[:-1]
        messages: Any = [{"role": role, "content": chatml.image_parts(content)} for role, content in turns]
    else:  # no chat template: the server puts the images before the text
        messages = chatml.VISION.sub("", prompt)
    item = {"prompt": messages, "images": [_image(im) for im in refs], "response": response}
    if hybrid and label not in (None, ""):
        item["reference"] = str(label)
    return item


def _group_key(prompt: str, label: Any, images: Any) -> tuple:
    """Rollouts of one prompt, label and images (references by value, PIL images by identity) group together."""
    refs = images if isinstance(images, list) else [images]
    return prompt, str(label), tuple(im if isinstance(im, (str, bytes, type(None))) else id(im) for im in refs)


class _Group:
    def __init__(self, timer: asyncio.TimerHandle) -> None:
        self.items: list[dict] = []
        self.futures: list[asyncio.Future] = []
        self.timer = timer


class AgentExecutor(SingleTurnAgentExecutor):
    """OpenRLHF's single-turn generation, rewarded by the ensemble at MRM_REWARD_URL."""

    def __init__(self, url: str | None = None, *, token: str | None = None, reward: str | None = None,
                 group_size: int | None = None, group_wait_s: float | None = None,
                 timeout_s: float | None = None) -> None:
        super().__init__(None)  # no remote_rm_url: rewards come from execute() below
        self.settings = OpenRLHFAgentConfig.from_env(url=url, token=token, reward=reward, group_size=group_size,
                                                     group_wait_s=group_wait_s, timeout_s=timeout_s)
        self._groups: dict[tuple, _Group] = {}
        self._client = None
        self._members: list[str] = []  # the ensemble's member names, read from /v1/models with the first call

    async def execute(self, prompt, label, sampling_params, max_length: int, hf_tokenizer, llm_engine,
                      images=None):
        output = await super().execute(prompt, label, sampling_params, max_length, hf_tokenizer, llm_engine,
                                       images=images)
        start, end = output["action_ranges"][0]
        response = hf_tokenizer.decode(output["observation_tokens"][start:end], skip_special_tokens=True)
        item = reward_item(prompt, images, response, label, hybrid=self.settings.reward == "hybrid")
        result = await self._score(_group_key(prompt, label, images), item)
        # OpenRLHF stacks extra_logs across rollouts: every rollout carries every member's key (NaN: not routed)
        logs = {"model_reward": result["model_reward"], "ensemble_std": result["std"],
                **{f"score_{name}": result["scores"].get(name, math.nan) for name in self._members}}
        if result.get("matched_reference") is not None:
            logs["matched_reference"] = float(result["matched_reference"])
        output.update(reward=result["reward"], scores=result["reward"], extra_logs=logs)
        return output

    async def _score(self, key: tuple, item: dict) -> dict:
        """This rollout's result, its group's other responses scored in the same request."""
        loop = asyncio.get_running_loop()
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(loop.call_later(self.settings.group_wait_s, self._flush, key))
        future = loop.create_future()
        group.items.append(item)
        group.futures.append(future)
        if len(group.items) >= self.settings.group_size:
            self._flush(key)
        return await future

    def _flush(self, key: tuple) -> None:
        group = self._groups.pop(key, None)
        if group is not None:
            group.timer.cancel()
            asyncio.ensure_future(self._send(group))

    async def _send(self, group: _Group) -> None:
        try:
            if self._client is None:
                from mrm_ray.serve.client import AsyncRewardClient

                s = self.settings
                client = await AsyncRewardClient(s.url, token=s.token, timeout=s.timeout_s,
                                                 max_wait_s=s.timeout_s).__aenter__()
                self._members = [m["name"] for m in (await client.models())["members"]]
                self._client = client
            results = await self._client.score(group.items, reward=self.settings.reward, method=self.settings.method,
                                               uncertainty_coef=self.settings.uncertainty_coef)
        except Exception as exc:
            for future in group.futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(group.futures, results):
            if not future.done():
                future.set_result(result)
