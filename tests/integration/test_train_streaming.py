"""Encoded pairs reach Ray Train workers through get_dataset_shard + iter_torch_batches."""

import json
import sys

from ray import cloudpickle

from mrm_ray.config import DataConfig
from mrm_ray.data.mixture import MixtureConfig, SourceConfig
from mrm_ray.data.pipeline import prepare_mixture

from helpers.corpus import write_corpus

CONFIG = DataConfig(max_length=512, max_prompt_tokens=256, max_response_tokens=64, min_response_tokens=8,
                    max_image_pixels=4_000_000, max_bad_fraction=0.5)


def _loop(cfg: dict) -> None:
    """The worker side: packed batches from the shard, one reward forward per batch."""
    import json

    import ray.train
    import torch

    from mrm_ray.data.collate import PairCollate, pair_batches
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.model.pairing import SEG_CHOSEN

    model = RewardModel.from_pretrained(cfg["model"]).eval()
    shard = ray.train.get_dataset_shard("train")
    collate = PairCollate(pad_token_id=cfg["pad_token_id"])
    seen, steps = [], 0
    for batch in pair_batches(shard, steps=cfg["steps"], batch_size=cfg["batch_size"], collate=collate, epoch_seed=0):
        assert set(batch) >= {"input_ids", "segment_ids", "mm_token_type_ids", "chosen_lengths"}
        assert int((batch["segment_ids"] == SEG_CHOSEN).sum()) == int(batch["chosen_lengths"].sum())
        with torch.no_grad():
            chosen, rejected = model.forward_pairs(batch)
        assert chosen.shape == (cfg["batch_size"],) and torch.isfinite(chosen).all()
        seen.append(int(batch["input_ids"].shape[0]))
        steps += 1
    rank = ray.train.get_context().get_world_rank()
    with open(f"{cfg['out_dir']}/rank{rank}.json", "w") as f:
        json.dump({"steps": steps, "rows": sum(seen)}, f)


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules


def test_every_worker_gets_the_same_steps(ray_cluster, tmp_path, tiny_checkpoint, encoder):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from mrm_ray.data.collate import steps_per_epoch

    corpus = write_corpus(tmp_path / "corpus", n_image=27, n_text=10)  # 37 rows: uneven on purpose
    mixture = MixtureConfig(sources=(SourceConfig(name="images", reader="chat_messages", path=str(corpus["image"])),
                                     SourceConfig(name="text", reader="chat_messages", path=str(corpus["text"]))))
    data = prepare_mixture(mixture, processor_path=tiny_checkpoint, data_config=CONFIG)
    n_rows, workers, batch_size = data.train.count(), 2, 4
    assert n_rows == 37
    steps = steps_per_epoch(n_rows, world_size=workers, batch_size=batch_size)
    assert steps == 4
    trainer = TorchTrainer(
        _loop,
        train_loop_config={"model": str(tiny_checkpoint), "pad_token_id": encoder.pad_token_id, "steps": steps,
                           "batch_size": batch_size, "out_dir": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        datasets={"train": data.encode(data.train, batch_size=8)},
        run_config=RunConfig(name="streaming", storage_path=str(tmp_path / "ray_results")),
    )
    result = trainer.fit()
    assert result.error is None
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(workers)]
    assert reports == [{"steps": steps, "rows": steps * batch_size}] * workers
