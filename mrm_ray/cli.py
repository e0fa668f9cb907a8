"""The `mrm-ray` command: build a tiny checkpoint, score pairs, run the CPU demo."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_dir() -> Path:
    """Real data made by others: `$MRM_SHARED_DATA`, else `../shared/data` beside the repo."""
    return Path(os.environ.get("MRM_SHARED_DATA", DEFAULT_SHARED_DATA))


def _cmd_tiny(args: argparse.Namespace) -> int:
    from mrm_ray.model.tiny import build_tiny_checkpoint

    out = build_tiny_checkpoint(args.out_dir, seed=args.seed, text_hidden=args.text_hidden,
                                vision_hidden=args.vision_hidden)
    print(f"tiny Qwen2.5-VL checkpoint written to {out}")
    return 0


def _good(records) -> list[dict]:
    from mrm_ray.data.quarantine import Rejected

    rows = []
    for record in records:
        if isinstance(record, Rejected):
            print(f"skipped {record.position}: {record.reason}", file=sys.stderr)
        else:
            rows.append(record)
    return rows


def _load_rows(data: str | None, limit: int | None) -> tuple[list[dict], str]:
    from mrm_ray.data.readers.chat_messages import read_chat_messages
    from mrm_ray.data.synthetic import image_grounded_pairs

    if data:
        rows, what = _good(read_chat_messages(data)), data
    else:
        rlaif = shared_data_dir() / "rlaif-v-sample" / "rlaif-v.jsonl"
        if rlaif.is_file():
            rows, what = _good(read_chat_messages(rlaif)), str(rlaif)
        else:
            print(f"note: {rlaif} not found (set MRM_SHARED_DATA); scoring generated pairs instead",
                  file=sys.stderr)
            rows, what = list(image_grounded_pairs(16, seed=0)), "generated image-grounded pairs"
    return rows[:limit] if limit else rows, what


def _cmd_score(args: argparse.Namespace) -> int:
    from mrm_ray.data.encode import PairEncoder
    from mrm_ray.model.processor import load_processor
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.model.scoring import score_pairs

    rows, what = _load_rows(args.data, args.limit)
    model = RewardModel.from_pretrained(args.model)
    encoder = PairEncoder(load_processor(args.model, max_pixels=args.max_pixels))
    scores = score_pairs(model, encoder, rows, batch_size=args.batch_size,
                         packed=args.pair_forward == "packed", progress=True)
    print(f"scored {len(rows)} pairs from {what} with {args.model}")
    print(f"{'id':<28} {'chosen':>9} {'rejected':>9}  correct")
    for row, (c, r) in zip(rows, scores):
        print(f"{row['id'][:28]:<28} {c:>9.4f} {r:>9.4f}  {'yes' if c > r else 'no'}")
    accuracy = sum(c > r for c, r in scores) / max(len(scores), 1)
    print(f"pairwise accuracy {accuracy:.2%} ({sum(c > r for c, r in scores)}/{len(scores)})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mrm_ray.model.tiny import build_tiny_checkpoint

    path = Path(args.run_dir) / "tiny-qwen2.5-vl"
    if not (path / "config.json").is_file():
        build_tiny_checkpoint(path, seed=0)
        print(f"built tiny Qwen2.5-VL checkpoint at {path}")
    args.model = str(path)
    print("an untrained tiny model: expect accuracy near chance; the point is the path runs end to end")
    return _cmd_score(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrm-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    tiny = sub.add_parser("tiny", help="write a tiny random Qwen2.5-VL checkpoint directory")
    tiny.add_argument("out_dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--text-hidden", type=int, default=64)
    tiny.add_argument("--vision-hidden", type=int, default=64)
    tiny.set_defaults(func=_cmd_tiny)

    def scoring_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", help="chat-message pair JSONL (default: the shared RLAIF-V sample)")
        p.add_argument("--limit", type=int, default=None)
        p.add_argument("--batch-size", type=int, default=4)
        p.add_argument("--max-pixels", type=int, default=None, help="override the processor's image budget")
        p.add_argument("--pair-forward", choices=("packed", "two_sequence"), default="packed")

    score = sub.add_parser("score", help="score chosen/rejected pairs with a (reward) checkpoint")
    score.add_argument("--model", required=True, help="Qwen2.5-VL or reward checkpoint directory")
    scoring_options(score)
    score.set_defaults(func=_cmd_score)

    demo = sub.add_parser("demo", help="build the tiny checkpoint and score the real RLAIF-V pairs")
    demo.add_argument("--run-dir", default="runs/demo")
    scoring_options(demo)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
