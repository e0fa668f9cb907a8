"""The rollout side of the reward service: rule rewards locally, bounded waits for a dead service."""

import socket

import pytest

from mrm_ray.rl.config import RewardServiceConfig
from mrm_ray.rl.reward_service import RewardService, RewardServiceDown

from helpers.flaky_proxy import FlakyProxy

ITEMS = [{"prompt": "Colour?", "images": [], "response": "It is \\boxed{Red}.", "reference": "red"},
         {"prompt": "Colour?", "images": [], "response": "blue", "reference": "red"}]


def test_rule_rewards_need_no_service():
    service = RewardService(RewardServiceConfig(mode="rule"), None)
    try:
        assert [r["reward"] for r in service.submit(ITEMS).result()] == [1.0, 0.0]
    finally:
        service.close()
    with pytest.raises(ValueError, match=r"set reward.url \(or reward.members"):
        RewardService(RewardServiceConfig(mode="hybrid"), None)


def test_a_service_answering_503_is_retried_until_max_wait_then_reported():
    proxy = FlakyProxy("http://127.0.0.1:9")  # never forwards: down from the first request
    proxy.schedule(down_after=0)
    service = RewardService(RewardServiceConfig(mode="model", max_wait_s=1.5, timeout_s=5), proxy.url)
    try:
        with pytest.raises(RewardServiceDown, match="still unavailable after 2s"):
            service.submit(ITEMS).result(timeout=30)
        assert proxy.refused >= 3  # retried with backoff (0.5 s, 1 s, ...) before giving up
    finally:
        service.close()
        proxy.close()


def test_refused_connections_are_reported_with_what_to_check():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    service = RewardService(RewardServiceConfig(mode="model", max_wait_s=1.0), f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(RewardServiceDown, match="unreachable for 1s.*Serve app running"):
            service.submit(ITEMS).result(timeout=30)
    finally:
        service.close()
