"""The member deployment's class in-process, its batch step called as `@serve.batch` calls it (the
decorator itself needs a replica; the live endpoint's tests cover it): a call whose deadline has passed
when its batch runs is dropped, not computed, and the rest of the batch is scored."""

import asyncio
import time

import pytest

from mrm_ray.serve.member import RewardMember
from mrm_ray.model.scorer import Scorer

ITEMS = [{"prompt": "Is the sky blue?", "images": [], "response": "Yes."},
         {"prompt": "Is grass red?", "images": [], "response": "No, green."}]


def test_expired_calls_are_dropped_and_the_rest_of_their_batch_is_scored(reward_checkpoints):
    path = str(reward_checkpoints[0])

    async def run():
        member = RewardMember.func_or_class("m", max_batch_size=8, defaults={"path": path})
        await member.reconfigure({})
        now = time.monotonic()
        live, expired = await member._batched([ITEMS, ITEMS[::-1]], [now + 60, now - 1e-3], Scorer.score_items)
        (later,) = await member._batched([ITEMS[:1]], [None], Scorer.score_items)  # no deadline: computed
        return member, live, expired, later

    member, live, expired, later = asyncio.run(run())
    expected = Scorer(path).score_items(ITEMS)
    assert expired == {"expired": True}
    assert live["values"] == pytest.approx(expected, abs=1e-4) and live["errors"] == {}
    assert later["values"] == pytest.approx(expected[:1], abs=1e-4)
    stats = member.info()["stats"]
    assert stats["expired_calls"] == 1 and stats["calls"] == 2
    assert stats["items"] == 3 and stats["max_batch_items"] == 2  # the expired call's items never ran
