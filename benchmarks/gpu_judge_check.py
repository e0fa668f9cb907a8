"""GPU check: items/s of a judge member (verdict and critique) against a scalar member, one full-size architecture.

Builds the published Qwen2.5-VL-3B architecture with random weights (no download): the generative model with its
LM head, saved with the tiny tokenizer and image processor (the config's special token ids moved onto the
tokenizer's, so that images are found), and a reward checkpoint of the same backbone. Then scores the same items
in process (what a Serve member runs per batch) with the `Scorer`, a `verdict` judge and a `critique` judge, each
after a warm-up, and prints items/s side by side. One process, one GPU, no Ray.

    python benchmarks/gpu_judge_check.py --out judge.json                   # on a GPU (bf16)
    python benchmarks/gpu_judge_check.py --config-dir TINY_CKPT --device cpu --items 8   # a CPU smoke run

Items: an image-grounded question (one 448 px image by default) with a ~20-word response, in batches of
--batch items; the critique judge generates up to --critique-tokens tokens per response before its verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(out: Path, *, preset: str, config_dir: str | None, dtype: str) -> tuple[Path, Path]:
    """(a generative checkpoint, a reward checkpoint of the same backbone) with random weights."""
    import torch
    from transformers import AutoConfig

    from mrm_ray.model.families import family_of
    from mrm_ray.model.processor import load_processor
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.model.tiny import build_tiny_checkpoint

    tiny = build_tiny_checkpoint(out / "tiny", seed=0)  # its tokenizer, chat template and image processor
    if config_dir:
        config = AutoConfig.from_pretrained(config_dir)
    else:
        from mrm_ray.model.published import published_config

        config = published_config(preset)
        small = AutoConfig.from_pretrained(tiny)
        for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
            setattr(config, key, getattr(small, key))  # the tokenizer's ids (the vocabulary covers them)
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(config.text_config, key, getattr(small.text_config, key))
    family = family_of(config)
    generator = family.transformers_class("generator")._from_config(config, dtype=getattr(torch, dtype))
    judge = out / "judge"
    generator.save_pretrained(judge, safe_serialization=True)
    processor = load_processor(tiny)
    processor.save_pretrained(judge)
    del generator
    reward = RewardModel.from_pretrained(judge, dtype=getattr(torch, dtype))
    reward_dir = reward.save_pretrained(out / "reward", processor=processor)
    return judge, reward_dir


def rate(score, items: list[dict], batch: int, rounds: int) -> float:
    import torch

    score(items[:batch])  # warm-up (kernels, caches)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start, done = time.perf_counter(), 0
    for r in range(rounds):
        chunk = items[(r * batch) % len(items):][:batch] or items[:batch]
        out = score(chunk)
        assert not any(isinstance(x, str) for x in out), out[:2]
        done += len(chunk)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="qwen2_5_vl_3b", help="a published architecture (model/families.py)")
    parser.add_argument("--config-dir", help="a local config.json instead of the published one (CPU smoke runs)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4, help="batches timed per mode")
    parser.add_argument("--image-side", type=int, default=448)
    parser.add_argument("--critique-tokens", type=int, default=64)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    from mrm_ray.config import JudgeConfig
    from mrm_ray.data.synthetic import image_grounded_pairs
    from mrm_ray.model.judge import Judge
    from mrm_ray.model.scorer import Scorer

    dtype = "bfloat16" if args.device == "cuda" else "float32"
    words = " because the picture clearly shows it and nothing in the image suggests otherwise at all"
    items = [{"prompt": r["prompt"], "images": r["images"], "response": r["chosen"] + words}
             for r in image_grounded_pairs(args.items, seed=5, size=args.image_side)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        judge_dir, reward_dir = build(Path(tmp), preset=args.preset, config_dir=args.config_dir, dtype=dtype)
        scorers = {
            "scalar member": Scorer(str(reward_dir), dtype=dtype),
            "verdict judge": Judge(str(judge_dir), JudgeConfig(), dtype=dtype),
            f"critique judge ({args.critique_tokens} tokens)": Judge(
                str(judge_dir), JudgeConfig(mode="critique", max_critique_tokens=args.critique_tokens,
                                            critique_timeout_s=3600), dtype=dtype)}
        for label, scorer in scorers.items():
            results[label] = rate(scorer.score_items, items, args.batch, args.rounds)
            print(f"{label:<32} {results[label]:>9.1f} items/s", flush=True)
            del scorer
    base = results["scalar member"]
    print(f"{args.config_dir or args.preset} ({dtype}, {args.device}); {args.image_side} px image, batch {args.batch}:")
    for label, r in results.items():
        print(f"  {label:<32} {r:>9.1f} items/s   scalar / this {base / r:>6.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps({"preset": args.config_dir or args.preset, "device": args.device,
                                              "dtype": dtype, "items_per_s": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
