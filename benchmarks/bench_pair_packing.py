"""Training-step pairs/s: packed [prompt|chosen|rejected] vs two sequences, side by side.

    python benchmarks/bench_pair_packing.py [--steps 4] [--batch 2] [--threads N]

The model is built from a config (random weights, no download), wider than the test model
so that compute dominates: text hidden 512 x 4 layers, vision hidden 256 x 4 blocks.
Shapes: (a) image-heavy, one image of ~1,000 LLM tokens and two ~64-token responses;
(b) text-only, a 192-token prompt and two ~64-token responses. Both paths run the same
training step (forward, Bradley-Terry loss, backward, AdamW), interleaved, and the ratio
of their medians is printed. Goal: >= 1.7x on the image-heavy shape.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def build_model():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    from mrm_ray.model.reward_model import RewardModel

    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=4096, bos_token_id=0, eos_token_id=1, pad_token_id=0, hidden_size=512,
                         intermediate_size=1536, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=8192,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 8, 8]}),
        vision_config=dict(depth=4, hidden_size=256, intermediate_size=768, num_heads=4, out_hidden_size=512,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[3]),
        image_token_id=4000, video_token_id=4001, vision_start_token_id=4002, vision_end_token_id=4003,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    backbone = Qwen2_5_VLModel(config)
    return RewardModel(backbone).float(), config


def make_pairs(config, *, batch: int, image_grid: tuple[int, int, int] | None, prompt_text: int,
               response: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(batch):
        text = lambda n: rng.integers(0, 3900, n)  # noqa: E731
        parts, mm = [text(12)], [np.zeros(12, np.int64)]
        extra = {}
        if image_grid is not None:
            t, h, w = image_grid
            n_tokens = t * h * w // 4
            parts += [[config.vision_start_token_id], np.full(n_tokens, config.image_token_id),
                      [config.vision_end_token_id]]
            mm += [np.zeros(1, np.int64), np.ones(n_tokens, np.int64), np.zeros(1, np.int64)]
            extra = {"pixel_values": rng.standard_normal((t * h * w, 3 * 2 * 14 * 14)).astype(np.float32),
                     "image_grid_thw": np.array([image_grid], np.int64)}
        parts.append(text(prompt_text))
        mm.append(np.zeros(prompt_text, np.int64))
        pairs.append({
            "prompt_ids": np.concatenate(parts).astype(np.int64),
            "prompt_mm_token_type_ids": np.concatenate(mm),
            "chosen_ids": text(response + int(rng.integers(-4, 5))),
            "rejected_ids": text(response + int(rng.integers(-4, 5))),
            **extra,
        })
    return pairs


def step_seconds(model, optimizer, batch) -> float:
    from mrm_ray.model.loss import bradley_terry_loss

    start = time.perf_counter()
    chosen, rejected = model.forward_pairs(batch)
    loss = bradley_terry_loss(chosen, rejected).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def measure(model, pairs, steps: int) -> dict[str, float]:
    from mrm_ray.model.packing import collate_packed, collate_two_sequence

    batches = {"packed": collate_packed(pairs, pad_token_id=0),
               "two_sequence": collate_two_sequence(pairs, pad_token_id=0)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    times = {k: [] for k in batches}
    for name, batch in batches.items():  # warm-up, not timed
        step_seconds(model, optimizer, batch)
    for _ in range(steps):  # interleaved so that machine noise hits both alike
        for name, batch in batches.items():
            times[name].append(step_seconds(model, optimizer, batch))
    tokens = {k: int(b["input_ids"].numel()) for k, b in batches.items()}
    return {"pairs_per_s": {k: len(pairs) / statistics.median(v) for k, v in times.items()}, "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, config = build_model()
    model.train()
    shapes = {
        # 56 x 72 patches -> 28 x 36 = 1,008 LLM image tokens
        "image-heavy (1,008 image tokens, 2x~64 response tokens)": dict(image_grid=(1, 56, 72), prompt_text=16),
        "text-only (~204 prompt tokens, 2x~64 response tokens)": dict(image_grid=None, prompt_text=192),
    }
    print(f"model: text 512x4, vision 256x4 ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), "
          f"batch {args.batch} pairs, {args.steps} timed steps each, {args.threads} threads")
    print(f"{'shape':<58} {'packed':>10} {'two-seq':>10} {'ratio':>7}  tokens packed/two-seq")
    for name, shape in shapes.items():
        pairs = make_pairs(config, batch=args.batch, response=64, seed=0, **shape)
        result = measure(model, pairs, args.steps)
        p, t = result["pairs_per_s"]["packed"], result["pairs_per_s"]["two_sequence"]
        print(f"{name:<58} {p:>8.3f}/s {t:>8.3f}/s {p / t:>6.2f}x  "
              f"{result['tokens']['packed']}/{result['tokens']['two_sequence']}")


if __name__ == "__main__":
    main()
