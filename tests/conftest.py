"""Session fixtures: one tiny checkpoint for the whole run, and the shared-data path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported: loopback only
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "learning", "integration")  # a broken change fails in the first minutes


def pytest_collection_modifyitems(session, config, items):
    """Unit tests first, then learning, then integration; within a tier the given order, except
    that a test with a Ray cluster of its own (`own_cluster`) runs last, so the shared one starts once."""
    def key(item):
        parts = item.path.resolve().relative_to(TESTS).parts
        tier = TIERS.index(parts[0]) if parts[0] in TIERS else len(TIERS)
        return tier, "own_cluster" in getattr(item, "fixturenames", ())

    items.sort(key=key)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from mrm_ray.model.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture(scope="session")
def family_checkpoint(tmp_path_factory, tiny_checkpoint):
    """family name -> its tiny checkpoint, each built once per session (qwen2_5_vl: `tiny_checkpoint`)."""
    from mrm_ray.model.tiny import build_tiny_checkpoint

    built = {"qwen2_5_vl": tiny_checkpoint}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_checkpoint(tmp_path_factory.mktemp(family) / "tiny", seed=0, family=family)
        return built[family]

    return get


@pytest.fixture(scope="session")
def processor(tiny_checkpoint):
    from mrm_ray.model.processor import load_processor

    return load_processor(tiny_checkpoint)


@pytest.fixture(scope="session")
def encoder(processor):
    from mrm_ray.model.inputs import PairEncoder

    return PairEncoder(processor)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`$MRM_SHARED_DATA` or ../shared/data beside the checkout; tests that need it skip, saying why, without it."""
    path = Path(os.environ.get("MRM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (path / "README.md").is_file():
        pytest.skip(f"shared data not found at {path}: set MRM_SHARED_DATA to the folder "
                    "holding rlaif-v-sample/, real-images/ and benchmarks/")
    return path


@pytest.fixture(scope="session")
def reward_checkpoints(tmp_path_factory) -> list[Path]:
    """Three tiny reward checkpoints (seeds 0, 1, 2): an ensemble, and a swap-in for live updates."""
    from mrm_ray.model.checkpoints import build_tiny_reward_checkpoint

    root = tmp_path_factory.mktemp("reward")
    return [build_tiny_reward_checkpoint(root / f"reward-{seed}", seed=seed) for seed in range(3)]


@pytest.fixture(scope="session")
def family_rewards(tmp_path_factory) -> dict[str, Path]:
    """family name -> a tiny reward checkpoint of it (seed 3), for the every-family serve and evaluation tests;
    every family but Qwen2.5-VL (`reward_checkpoints`)."""
    from mrm_ray.model.checkpoints import build_tiny_reward_checkpoint
    from mrm_ray.model.families import TINY_FAMILIES

    root = tmp_path_factory.mktemp("family-rewards")
    return {f: build_tiny_reward_checkpoint(root / f, seed=3, family=f) for f in TINY_FAMILIES if f != "qwen2_5_vl"}


@pytest.fixture(scope="session")
def s3():
    """A local S3-compatible server (moto's, on 127.0.0.1); `s3.bucket()` makes an empty bucket."""
    from helpers.s3 import s3_server, stop_s3_server

    yield s3_server()
    stop_s3_server()


@pytest.fixture(scope="session")
def hf_seq_cls(tmp_path_factory, family_checkpoint) -> Path:
    """A reward model saved by transformers itself: `Qwen3ForSequenceClassification` (a linear `score` head of
    seed 5) on the tiny Qwen3, with its tokenizer, as off-the-shelf text reward models ship."""
    import torch
    from transformers import Qwen3ForSequenceClassification

    from mrm_ray.model.processor import load_processor

    base = family_checkpoint("qwen3")
    torch.manual_seed(5)
    model = Qwen3ForSequenceClassification.from_pretrained(base, num_labels=1).eval()
    model.config.pad_token_id = model.config.get_text_config().pad_token_id
    out = tmp_path_factory.mktemp("hf-seq-cls") / "Qwen3-RM"
    model.save_pretrained(out)
    load_processor(base).save_pretrained(out)
    return out
