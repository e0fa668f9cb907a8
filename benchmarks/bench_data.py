"""Data at scale, three measurements (ratios side by side in one run each):

    python benchmarks/bench_data.py --only per-cpu [--pairs 48] [--max-pixels 1003520]
    python benchmarks/bench_data.py --only read [--read-pairs 2000]
    python benchmarks/bench_data.py --only scale [--scale-pairs 800] [--store-mb 128]

read: one large JSONL of image pairs (photos as files) through the light pass (`IndexParts`
actors reading and checking parts of 100 lines) on a fresh local Ray with 1 CPU, then with 2;
pairs/s over the whole run and past the actors' start-up (timed on a 40-pair run), and the
ratios.

scale: the same kind of source at 1x and 4x its size, each on a fresh local Ray whose object
store is `--store-mb` (the 4x image bytes are over 3x the store): time from `prepare_mixture`
to the first encoded training batch, then (4x) a whole tiny training run on it; the object
store's sampled peak and the bytes spilled, as fractions of the data's image bytes.

per-cpu (below): can preprocessing keep up with training? Pairs/s per CPU next to a training
step's rate.

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


# ---------------------------------------------------------------------------- read and scale
def image_source(folder: Path, pairs: int, *, side: int = 448, seed: int = 0) -> tuple[Path, int]:
    """A chat_messages JSONL of `pairs` image pairs, each naming its own noise photo (JPEG, about 140 kB at
    448 px, so nothing compresses away); returns (file, image bytes)."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    total, lines = 0, []
    base = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    for i in range(pairs):
        name = f"images/{i}.jpg"
        pixels = np.roll(base, i * 7, axis=(0, 1)) ^ np.uint8(i % 256)
        Image.fromarray(pixels).save(folder / name, quality=90)
        total += (folder / name).stat().st_size
        colour = ("red", "blue")[i % 2]
        lines.append(json.dumps({"id": f"p{i}", "prompt": [{"role": "user", "content": [
            {"type": "image_url", "image_url": name}, {"type": "text", "text": "What colour dominates?"}]}],
            "chosen": [{"role": "assistant", "content": f"It is mostly {colour}."}],
            "rejected": [{"role": "assistant", "content": "It is green."}]}))
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "pairs.jsonl", total


class StoreMonitor:
    """Samples the object store's bytes in use and the bytes spilled so far (the raylet's own counters)."""

    def __init__(self, every: float = 0.2) -> None:
        import threading

        import ray
        from ray._private.internal_api import get_state_from_address

        self.state = get_state_from_address(ray.get_runtime_context().gcs_address)
        self.peak = self.spilled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        from ray._private.internal_api import get_memory_info_reply

        stats = get_memory_info_reply(self.state).store_stats
        self.peak = max(self.peak, stats.object_store_bytes_used)
        self.spilled = max(self.spilled, stats.spilled_bytes_total)

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self._sample()
            except Exception:  # noqa: BLE001 - a missed sample only
                pass

    def stop(self) -> "StoreMonitor":
        self._stop.set()
        self._thread.join()
        self._sample()
        return self


def fresh_ray(cpus: int, store_mb: int, spill: Path):
    import json

    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=cpus, object_store_memory=store_mb << 20, include_dashboard=False,
             _system_config={"object_spilling_config": json.dumps(
                 {"type": "filesystem", "params": {"directory_path": str(spill)}})})


def _mixture(path: Path, name: str = "bench"):
    from mrm_ray.config import MixtureConfig, SourceConfig

    return MixtureConfig(name=name, held_out_fraction=0.1, seed=0,
                         sources=(SourceConfig(name=name, reader="chat_messages", path=str(path)),))


def bench_read(args, tiny: Path, work: Path) -> None:
    from mrm_ray.config import DataConfig
    from mrm_ray.data.pipeline import prepare_mixture

    source, image_bytes = image_source(work / "read", args.read_pairs)
    warm, _ = image_source(work / "warm-up", 40, seed=9)
    rates = {}
    for cpus in (1, 2):
        fresh_ray(cpus, 512, work / f"spill-read-{cpus}")
        timed = {}
        for name, path, n in (("warm-up", warm, 40), ("start-up", warm, 40), ("whole", source, args.read_pairs)):
            start = time.perf_counter()  # the first run starts Ray's workers; the second times the actors' start
            prepare_mixture(_mixture(path), processor_path=str(tiny), data_config=DataConfig(rows_per_part=100),
                            concurrency=cpus, num_cpus=1)
            timed[name] = time.perf_counter() - start
        rates[cpus] = (args.read_pairs / timed["whole"],
                       (args.read_pairs - 40) / (timed["whole"] - timed["start-up"]))
    print(f"read + check one JSONL of {args.read_pairs} image pairs ({image_bytes / 1e6:.0f} MB of images), "
          "IndexParts actors of 1 CPU each")
    print(f"{'CPUs':<6} {'pairs/s, wall':>14} {'pairs/s, past start-up':>23}")
    for cpus, (wall, steady) in rates.items():
        print(f"{cpus:<6} {wall:>14.1f} {steady:>23.1f}")
    print(f"2 CPUs vs 1: {rates[2][0] / rates[1][0]:.2f}x wall, {rates[2][1] / rates[1][1]:.2f}x past start-up")


def bench_scale(args, tiny: Path, work: Path) -> None:
    import dataclasses

    from mrm_ray.config import DataConfig, RunConfig, TrainConfig
    from mrm_ray.data.pipeline import prepare_mixture

    rows = []
    for scale in (1, 4):
        source, image_bytes = image_source(work / f"scale{scale}", args.scale_pairs * scale, side=args.image_side,
                                           seed=scale)
        fresh_ray(2, args.store_mb, work / f"spill-{scale}")
        monitor = StoreMonitor()
        start = time.perf_counter()
        data = prepare_mixture(_mixture(source), processor_path=str(tiny), data_config=DataConfig(),
                               concurrency=1, num_cpus=0.5)
        light = time.perf_counter() - start
        for _ in data.encode(data.train, concurrency=1, num_cpus=0.5).iter_batches(batch_size=8):
            break  # leaving the loop closes the iterator, which stops the execution (an abandoned one runs on)
        first = time.perf_counter() - start
        trained = None
        if scale == 4:
            from mrm_ray.train.launch import run_training

            run = RunConfig(name=f"bench-scale{scale}", output_dir=str(work / "runs"), model=dataclasses.replace(
                RunConfig().model, path=str(tiny)), preprocess_cpus=0.5, cache_encoded=False,
                train=TrainConfig(num_workers=2, cpus_per_worker=0.5, micro_batch_size=8, global_batch_size=16,
                                  zero_stage=2, eval_every=10_000, log_every=50, epochs=1.0))
            t0 = time.perf_counter()
            summary = run_training(run, data=data)
            trained = (time.perf_counter() - t0, summary.step)
        monitor.stop()
        rows.append((scale, args.scale_pairs * scale, image_bytes, light, first, monitor.peak, monitor.spilled,
                     trained))
    print(f"object store {args.store_mb} MB; one noise JPEG of {args.image_side} px per pair, "
          f"{rows[0][2] / rows[0][1] / 1e3:.0f} kB on average")
    print(f"{'size':<5} {'pairs':>6} {'images MB':>10} {'light pass s':>13} {'first batch s':>14} "
          f"{'store peak':>11} {'spilled':>9}  training")
    for scale, n, image_bytes, light, first, peak, spilled, trained in rows:
        done = f"{trained[1]} steps in {trained[0]:.0f} s" if trained else "-"
        print(f"{scale}x{'':<3} {n:>6} {image_bytes / 1e6:>10.0f} {light:>13.1f} {first:>14.1f} "
              f"{peak / image_bytes:>10.2f}x {spilled / image_bytes:>8.2f}x  {done}")
    print(f"4x vs 1x: first batch {rows[1][4] / rows[0][4]:.2f}x later for 4x the data; "
          f"store peak {rows[1][5] / max(rows[0][5], 1):.2f}x; 4x images / store = "
          f"{rows[1][2] / (args.store_mb << 20):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["per-cpu", "read", "scale"], default="per-cpu")
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--max-pixels", type=int, default=1280 * 28 * 28)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--read-pairs", type=int, default=2000)
    parser.add_argument("--scale-pairs", type=int, default=800)
    parser.add_argument("--store-mb", type=int, default=128)
    parser.add_argument("--image-side", type=int, default=448, help="scale: the noise photos' side in pixels")
    args = parser.parse_args()
    if args.only in ("read", "scale"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        from mrm_ray.model.tiny import build_tiny_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            tiny = build_tiny_checkpoint(Path(tmp) / "tiny")
            (bench_read if args.only == "read" else bench_scale)(args, tiny, Path(tmp))
        return
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
