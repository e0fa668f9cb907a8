"""Can preprocessing keep up with training? Pairs/s per CPU next to a training step's rate.

    python benchmarks/bench_data.py [--pairs 48] [--max-pixels 1003520]

Pairs are built from the real photos in ../shared/data (real-images/ and the RLAIF-V
sample, with the RLAIF-V responses as chosen/rejected text) and preprocessed at
Qwen2.5-VL's real default budget (max_pixels 1280*28*28) by the pipeline's own stages:
`CheckPairs` (decode checks, exact token counts) and `EncodePairs` (processor + chat
template -> ids and pixel values), each on one thread = one CPU. The same encoded pairs
then feed a packed training step (forward, loss, backward, AdamW) of a model built from a
config wider than the test model (text 512 x 4 layers, vision 256 x 4 blocks) on all
threads. The last line says how many preprocessing CPUs one such trainer needs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def real_pairs(shared: Path, n: int) -> list[dict]:
    from mrm_ray.data.readers.chat_messages import read_chat_messages
    from mrm_ray.data.schema import canonical_pair

    rlaif = [r for r in read_chat_messages(shared / "rlaif-v-sample" / "rlaif-v.jsonl") if isinstance(r, dict)]
    photos = sorted((shared / "real-images").glob("*.jpg")) + sorted((shared / "rlaif-v-sample" / "image").glob("*.jpg"))
    rows = []
    for i in range(n):
        text = rlaif[i % len(rlaif)]
        rows.append(canonical_pair(id=f"bench-{i}", source="bench", position=str(i),
                                   prompt="Describe this image in detail.", images=[photos[i % len(photos)].read_bytes()],
                                   chosen=text["chosen"], rejected=text["rejected"]))
    return rows


def stage_rate(stage, rows: list[dict]) -> tuple[float, object]:
    from mrm_ray.data.pipeline import CHECKED_SCHEMA

    table = pa.Table.from_pylist([{**r, "reject_reason": None, "reject_stage": None, "prompt_tokens": None,
                                   "chosen_tokens": None, "rejected_tokens": None, "image_sizes": []} for r in rows],
                                 schema=CHECKED_SCHEMA)
    stage(table.slice(0, 2))  # warm-up
    start = time.perf_counter()
    out = stage(table)
    return len(rows) / (time.perf_counter() - start), out


def wide_model(tiny: Path):
    from transformers import AutoConfig, Qwen2_5_VLModel

    from mrm_ray.model.reward_model import RewardModel

    config = AutoConfig.from_pretrained(tiny)
    config.text_config.update(dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                                    num_attention_heads=8, num_key_value_heads=4,
                                    layer_types=["full_attention"] * 4))
    config.text_config.rope_parameters["mrope_section"] = [16, 8, 8]
    config.vision_config.update(dict(hidden_size=256, intermediate_size=768, num_heads=4, depth=4,
                                      out_hidden_size=512, fullatt_block_indexes=[3]))
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return RewardModel(Qwen2_5_VLModel(config))


def train_rate(model, encoded: dict, pad_token_id: int, *, batch: int, steps: int) -> float:
    from mrm_ray.data.collate import PairCollate
    from mrm_ray.model.loss import bradley_terry_loss

    collate = PairCollate(pad_token_id=pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    model.train()
    times = []
    for step in range(steps + 1):
        rows = {k: v[step * batch:(step + 1) * batch] for k, v in encoded.items()}
        packed = collate(rows)
        start = time.perf_counter()
        chosen, rejected = model.forward_pairs(packed)
        loss = bradley_terry_loss(chosen, rejected).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:  # the first step warms up
            times.append(time.perf_counter() - start)
    return batch / (sum(times) / len(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--max-pixels", type=int, default=1280 * 28 * 28)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    shared = Path(os.environ.get("MRM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (shared / "real-images").is_dir():
        sys.exit(f"needs the real photos in {shared}/real-images (set MRM_SHARED_DATA)")

    from mrm_ray.config import DataConfig, to_dict
    from mrm_ray.data.pipeline import CheckPairs, EncodePairs
    from mrm_ray.model.tiny import build_tiny_checkpoint

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_checkpoint(Path(tmp) / "tiny")
        config = to_dict(DataConfig(max_pixels=args.max_pixels, max_length=8192, max_prompt_tokens=4096))
        rows = real_pairs(shared, args.pairs)
        torch.set_num_threads(1)
        check_rate, _ = stage_rate(CheckPairs(str(tiny), config), rows)
        encoder = EncodePairs(str(tiny), config)
        encode_rate, encoded = stage_rate(encoder, rows)
        torch.set_num_threads(threads)
        image_tokens = sum(int(g.prod(axis=1).sum()) // 4 for g in encoded["image_grid_thw"]) / args.pairs
        packed_tokens = sum(len(a) + len(b) + len(c) for a, b, c in zip(
            encoded["prompt_ids"], encoded["chosen_ids"], encoded["rejected_ids"])) / args.pairs
        rate = train_rate(wide_model(tiny), encoded, encoder.encoder.pad_token_id, batch=args.batch, steps=args.steps)
    both = 1 / (1 / check_rate + 1 / encode_rate)
    print(f"{args.pairs} pairs from real photos at max_pixels={args.max_pixels}: "
          f"{image_tokens:.0f} image tokens, {packed_tokens:.0f} packed tokens per pair on average")
    print(f"{'stage':<62} {'pairs/s':>9}")
    print(f"{'check (decode, token counts), per CPU':<62} {check_rate:>9.2f}")
    print(f"{'encode (processor, chat template), per CPU':<62} {encode_rate:>9.2f}")
    print(f"{'check + encode, per CPU':<62} {both:>9.2f}")
    print(f"{f'training step, packed, text 512x4 / vision 256x4, {threads} threads':<62} {rate:>9.2f}")
    print(f"preprocessing CPUs needed to feed this trainer: {rate / both:.2f} "
          f"(a trainer consuming R pairs/s needs R / {both:.1f} CPUs of preprocessing)")


if __name__ == "__main__":
    main()
