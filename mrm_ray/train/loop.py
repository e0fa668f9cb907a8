"""The Ray Train worker: RewardModel under DeepSpeed ZeRO, fed by a Ray Data shard.

Every worker builds the model from the run's plain config dict, wraps it with
`deepspeed.initialize`, streams packed pair batches from `get_dataset_shard("train")`,
evaluates on its held-out shard (summed across ranks), and reports metrics and a
checkpoint (checkpoint.py: the DeepSpeed state of every rank, ZeRO-3 shards included)
through `ray.train.report`. A restarted worker resumes from `ray.train.get_checkpoint()`:
weights, optimizer, schedule, RNG, step counter and position in the epoch, checked
against the fingerprint saved with them; with the same data order (the pipeline keeps
it) the resumed run's losses are the unbroken run's.
"""

from __future__ import annotations

import math
import time

import torch

from mrm_ray.model import families

def split_rewards(out) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) from a packed forward (a tuple) or a two-sequence one (2B rewards)."""
    if isinstance(out, tuple):
        return out
    half = len(out) // 2
    return out[:half], out[half:]


def build_model(run, *, ds_config: dict):
    """RewardModel with the run's head, dtype, vision freezing, checkpointing and LoRA."""
    from mrm_ray.model import checkpoints
    from mrm_ray.model.reward_model import RewardModel

    keep = None
    if run.train.zero_stage == 3:  # the model is then built with its weights already partitioned
        from transformers.integrations import HfDeepSpeedConfig

        keep = HfDeepSpeedConfig(ds_config)  # must stay alive while the model loads
    dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32
    load = RewardModel.from_config if run.model.random_init else RewardModel.from_pretrained
    model = load(checkpoints.resolve(run.model.path, want=checkpoints.BACKBONE), head=run.model.head, dtype=dtype,
                 attn_implementation=run.model.attn_implementation, vision_attention=run.model.vision_attention,
                 packed_attention=run.model.packed_attention)
    del keep
    if run.train.freeze_vision and families.vision_tower(model.backbone) is not None:
        families.vision_tower(model.backbone).requires_grad_(False)
    if run.train.gradient_checkpointing:
        model.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if run.train.lora is not None:
        model = apply_lora(model, run.train.lora)
    return model


def apply_lora(model, lora):
    """LoRA adapters on the language model's projections (where the family's entry says it is); the head
    stays fully trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=model.family.lora_scope + "(" + "|".join(lora.target_modules) + ")")
    model.backbone = get_peft_model(model.backbone, config)
    model.head.requires_grad_(True)
    return model


def param_groups(model, train) -> list[dict]:
    """Backbone and head as two AdamW groups (the head may have its own learning rate)."""
    head = [p for p in model.head.parameters() if p.requires_grad]
    body = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": body, "lr": train.learning_rate, "name": "backbone"}]
    groups.append({"params": head, "lr": train.head_learning_rate or train.learning_rate, "name": "head"})
    return [g for g in groups if g["params"]]


class Evaluator:
    """Held-out pairwise accuracy, loss and reward statistics, per source, summed over ranks."""

    def __init__(self, sources: list[str]) -> None:
        self.sources = sources

    @torch.no_grad()
    def __call__(self, engine, batches, loss_config) -> dict:
        import torch.distributed as dist

        from mrm_ray.model.loss import bradley_terry_loss

        # per source: pairs, correct, loss sum; overall: reward sum, reward sum of squares
        stats = torch.zeros(len(self.sources), 3, dtype=torch.float64)
        moments = torch.zeros(3, dtype=torch.float64)
        engine.eval()
        for batch in batches:
            source = batch.pop("source_index")
            chosen, rejected = split_rewards(engine(**batch))
            lengths = batch["chosen_lengths"], batch["rejected_lengths"]  # the loss normalises by them when asked
            for i, name in enumerate(self.sources):
                sel = source == i
                if sel.any():
                    out = bradley_terry_loss(chosen[sel], rejected[sel], config=loss_config,
                                             chosen_lengths=lengths[0][sel], rejected_lengths=lengths[1][sel])
                    n = int(sel.sum())
                    stats[i] += torch.tensor([n, float(out.accuracy) * n, float(out.loss) * n], dtype=torch.float64)
            both = torch.cat([chosen, rejected]).double().cpu()
            moments += torch.stack([torch.tensor(float(len(both))), both.sum(), (both ** 2).sum()])
        engine.train()
        if dist.is_initialized():
            dist.all_reduce(stats)
            dist.all_reduce(moments)
        total = stats.sum(0)
        metrics = {"held_out_pairs": int(total[0]), "held_out_accuracy": float(total[1] / max(total[0], 1)),
                   "held_out_loss": float(total[2] / max(total[0], 1))}
        for i, name in enumerate(self.sources):
            if stats[i, 0] > 0:
                metrics[f"held_out_accuracy/{name}"] = float(stats[i, 1] / stats[i, 0])
        n, s, ss = moments.tolist()
        mean = s / max(n, 1)
        metrics["score_mean"] = mean
        metrics["score_std"] = math.sqrt(max(ss / max(n, 1) - mean * mean, 1e-12))
        return metrics


def make_engine(run, *, total_steps: int, on_gpu: bool):
    """The run's model wrapped by `deepspeed.initialize` (the process group must exist)."""
    import deepspeed

    from mrm_ray.train.deepspeed import build_ds_config

    ds_config = build_ds_config(run.train, total_steps=total_steps, on_gpu=on_gpu)
    model = build_model(run, ds_config=ds_config)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups(model, run.train),
                                           config=ds_config, dist_init_required=False)
    return engine


def train_micro_step(engine, batch: dict, loss_config, *, share: float | None = None,
                     boundary: bool | None = None) -> dict:
    """Forward, Bradley-Terry loss, backward and (at the accumulation boundary) the optimizer step.

    By default DeepSpeed's own accumulation (loss / accumulation steps, a boundary every that many
    micro-steps); micro-batches cut by tokens pass their `share` of the step's pairs (the loss is
    then the mean over the step's pairs, whatever the cut) and whether this one ends the step."""
    from mrm_ray.model.loss import bradley_terry_loss

    chosen, rejected = split_rewards(engine(**batch))
    out = bradley_terry_loss(chosen, rejected, config=loss_config, margin=batch.get("margin"),
                             chosen_lengths=batch["chosen_lengths"], rejected_lengths=batch["rejected_lengths"])
    if share is None:
        engine.backward(out.loss)
    else:
        engine.set_gradient_accumulation_boundary(boundary)
        engine.backward(out.loss * share, scale_wrt_gas=False)
    engine.step()
    real = batch["segment_ids"].ne(0).sum() if "segment_ids" in batch else batch["attention_mask"].sum()
    return {**out.metrics(), "_real_tokens": float(real), "_token_slots": float(batch["input_ids"].numel())}


def step_metrics(window: list[tuple[dict, int]]) -> dict[str, float]:
    """One step's metrics from its micro-batches' (metrics, pairs): per-pair means, and the share of
    real tokens in the rows the forwards ran (1 - padding) with the real tokens per micro-batch."""
    pairs = sum(n for _, n in window)
    metrics = {k: sum(m[k] * n for m, n in window) / pairs for k in window[0][0] if not k.startswith("_")}
    real, slots = (sum(m[k] for m, _ in window) for k in ("_real_tokens", "_token_slots"))
    metrics.update(real_token_share=real / slots, tokens_per_micro_batch=real / len(window),
                   micro_batches=float(len(window)))
    return metrics


def train_step_by_tokens(engine, rows: list[dict], collate, loss_config, *, max_tokens: int) -> list[tuple[dict, int]]:
    """One optimizer step on this rank's records, cut into micro-batches by tokens: (metrics, pairs) each."""
    from mrm_ray.data.collate import micro_batch_count, step_micro_batches

    parts = step_micro_batches(rows, collate, parts=micro_batch_count(rows, max_tokens))
    pairs, device = sum(n for _, n in parts), engine.device  # a ranked record holds several pairs
    return [(train_micro_step(engine, _to(batch, device), loss_config, share=n / pairs,
                              boundary=i == len(parts) - 1), n)
            for i, (batch, n) in enumerate(parts)]


def _skip_cpu_inference_comm_op() -> None:
    """DeepSpeed sets up its shared-memory CPU all-reduce (a C++ op JIT-compiled on first use, about a
    minute on 2 cores) with its communication backend, but only its inference all-reduce uses it; ZeRO's
    collectives go through torch.distributed (gloo here). DeepSpeed keeps the op table editable for this."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def mean_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the ranks (the whole global batch), the same on every rank."""
    import torch.distributed as dist

    if not dist.is_initialized() or not metrics:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return dict(zip(keys, (values / dist.get_world_size()).tolist()))


def learning_rates(engine) -> dict[str, float]:
    """The optimizer's current rate per parameter group: `lr` (the first group's) and `lr/NAME` for each."""
    groups = engine.optimizer.param_groups
    rates = {"lr": groups[0]["lr"]}
    rates.update({f"lr/{g['name']}": g["lr"] for g in groups if "name" in g})
    return rates


def train_loop_per_worker(cfg: dict) -> None:
    """Entry point run by each Ray Train worker; `cfg` is plain data (see launch.py)."""
    import deepspeed
    import ray.train

    from mrm_ray.config import RunConfig, validate
    from mrm_ray.data.collate import PairCollate, pair_batches
    from mrm_ray.logs import no_progress_bars
    from mrm_ray.run_folder import LOG_DIR, RunFolder
    from mrm_ray.train import checkpoint as ckpt
    from mrm_ray.train.progress import Progress

    run = validate(RunConfig, cfg["run"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    folder = RunFolder(run.location)
    no_progress_bars()
    folder.route_logs(f"rank{rank}")
    on_gpu = run.train.use_gpu and torch.cuda.is_available()
    if not on_gpu:
        _skip_cpu_inference_comm_op()
    # adopt the process group Ray Train created, so ZeRO-3's partitioned init sees every rank
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", auto_mpi_discovery=False)
    torch.manual_seed(run.train.seed + rank)
    micro_per_epoch, total_steps = cfg["micro_steps_per_epoch"], cfg["total_steps"]
    accum = run.train.accumulation_steps
    stop_step = min(total_steps, run.train.stop_at_step or total_steps)
    engine = make_engine(run, total_steps=total_steps, on_gpu=on_gpu)
    state = {"step": 0, "micro_step": 0}
    progress = Progress(run, folder, rank=rank, total_steps=total_steps, pairs_per_step=run.train.global_batch_size)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        state, fingerprint = ckpt.restore(engine, checkpoint, rank=rank)
        progress.restored(state["step"], fingerprint)
    budget = run.train.max_tokens_per_micro_batch
    collate = PairCollate(pad_token_id=cfg["pad_token_id"], packed=run.model.pair_forward == "packed",
                          sources=cfg["sources"], row_tokens=budget,
                          share_prompt=engine.module.shares_prompt)
    evaluator = Evaluator(cfg["sources"])
    train_shard, held_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("held_out")
    device = engine.device

    def evaluate(step: int) -> dict:
        batches = (_to(b, device) for b in pair_batches(held_shard, steps=cfg["held_out_steps"],
                                                         batch_size=run.train.micro_batch_size, collate=collate,
                                                         epoch_seed=0))
        return evaluator(engine, batches, run.loss)

    engine.train()
    window: list[tuple[dict, int]] = []  # (micro-batch metrics, its pairs) since the last step
    pending: list[dict] = []  # with a token budget: the step's pair rows, cut when the step is complete
    timing = {"seconds": 0.0, "pairs": 0}  # training throughput, eval and checkpoints excluded
    tick = time.perf_counter()
    while state["step"] < stop_step:
        epoch, skip = divmod(state["micro_step"], micro_per_epoch)
        batches = pair_batches(train_shard, steps=micro_per_epoch, batch_size=run.train.micro_batch_size,
                               collate=None if budget else collate, epoch_seed=run.data.shuffle_seed + epoch,
                               shuffle_buffer=run.data.shuffle_buffer)
        for i, batch in enumerate(batches):
            if i < skip:  # resuming mid-epoch: these pairs were already trained on
                continue
            if state["micro_step"] % accum == 0:
                rates = learning_rates(engine)  # what this step's optimizer update uses
            state["micro_step"] += 1
            if budget:
                pending += batch
            else:
                batch = _to(batch, device)
                batch.pop("source_index")
                window.append((train_micro_step(engine, batch, run.loss), len(batch["chosen_lengths"])))
            if state["micro_step"] % accum:
                continue
            if budget:
                window = train_step_by_tokens(engine, pending, collate, run.loss, max_tokens=budget)
                pending = []
            state["step"] += 1
            step = state["step"]
            now = time.perf_counter()
            if step > progress.first_step:  # the first step pays one-off start-up costs
                timing["seconds"] += now - tick
                timing["pairs"] += run.train.global_batch_size
            tick = now
            metrics = mean_over_ranks(step_metrics(window))
            metrics.update(rates)
            window = []
            progress.step(step, metrics)
            if step % run.train.eval_every == 0 or step == stop_step:
                metrics.update(evaluate(step), step=step, epoch=epoch,
                               train_pairs_per_s=timing["pairs"] / max(timing["seconds"], 1e-9))
                progress.evaluated(step, metrics)
                fingerprint = ckpt.save(engine, rank=rank, state=dict(state), run_dict=cfg["run"], metrics=metrics)
                progress.checkpointed(step, fingerprint)
                tick = time.perf_counter()
            if step >= stop_step:
                break
    if stop_step < total_steps:
        progress.stopped(stop_step)
    progress.close()
    folder.push(f"{LOG_DIR}/rank{rank}.log")


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

