"""Per-GPU memory estimate for a training preset: will it fit before you rent the GPUs?

Counts parameters by building the architecture (model/published.py, or a local config.json)
on the meta device, so every family is counted exactly (a mixture of experts: every expert, and the
share a token runs through, k of E routed experts), then adds, per GPU under the preset's
ZeRO stage and offload settings:
  weights      bf16, 2 B/param   (ZeRO-3: split over GPUs; param offload: on CPU)
  gradients    bf16, 2 B/param   (ZeRO-2/3: split over GPUs)
  optimizer    fp32 master + Adam m, v = 12 B/param (ZeRO-1+: split; optimizer offload: on CPU)
  activations  per micro-batch of packed pairs (Korthikanti et al.: ~34 B x tokens x hidden
               per layer without recomputation; layer inputs only, plus one layer, with
               gradient checkpointing; Qwen3.5's linear-attention layers are counted as
               attention layers, an upper bound); no vocabulary logits: the reward head is one scalar
  overhead     CUDA context, NCCL buffers, ZeRO-3 gather buckets, fragmentation
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class Architecture:
    """What the plan needs of a model: its parameters (backbone, no LM head) and the sizes activations scale with."""

    params: int
    active: int  # parameters a token runs through: a mixture of experts' k of E experts and the rest (dense: all)
    lm_head: int  # the published total's LM head (0 when tied): not trained, the reward head replaces it
    hidden: int
    layers: int
    intermediate: int
    vision_hidden: int = 0  # 0: a text-only backbone
    vision_layers: int = 0
    merge: int = 4  # patches per image token


def architecture(config) -> Architecture:
    """An `Architecture` from a transformers config, its parameters counted on the meta device."""
    import torch

    from mrm_ray.model import families

    family = families.family_of(config)
    with torch.device("meta"):  # shapes only: no memory, no init
        model = family.transformers_class()._from_config(config)
    text = families.text_config(config)
    vision = getattr(config, "vision_config", None)
    tied = getattr(config, "tie_word_embeddings", None) or text.tie_word_embeddings
    params = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for block in model.modules() if type(block).__name__.endswith("SparseMoeBlock")
                  for p in block.experts.parameters())  # every expert of every MoE layer (a token runs k of E)
    unrouted = (text.num_experts - text.num_experts_per_tok, text.num_experts) if experts else (0, 1)
    return Architecture(
        params=params, active=params - experts * unrouted[0] // unrouted[1],
        lm_head=0 if tied else text.vocab_size * text.hidden_size,
        hidden=text.hidden_size, layers=text.num_hidden_layers,
        # a mixture of experts' MLP width per token: its k routed experts and its shared one
        intermediate=getattr(text, "intermediate_size", None) or text.num_experts_per_tok * text.moe_intermediate_size
        + getattr(text, "shared_expert_intermediate_size", 0),
        vision_hidden=0 if vision is None else getattr(vision, "embed_dim", None) or vision.hidden_size,
        vision_layers=0 if vision is None else vision.depth,
        merge=4 if vision is None else vision.spatial_merge_size ** 2)


@dataclass
class Plan:
    params: int
    active: int  # parameters a token runs through (a mixture of experts' routed share; else `params`)
    weights: float
    gradients: float
    optimizer: float
    activations: float
    overhead: float
    cpu_offload: float  # bytes per GPU held in CPU memory instead

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead


def estimate(arch: Architecture, train, *, gpus: int, tokens_per_pair: int, image_tokens: int) -> Plan:
    """Bytes per GPU for one preset on `gpus` GPUs (ZeRO partitions over all of them)."""
    p = arch.params
    stage = train.zero_stage
    weights = 2 * p / (gpus if stage == 3 else 1)
    grads = 2 * p / (gpus if stage >= 2 else 1)
    optim = 12 * p / (gpus if stage >= 1 else 1)
    offload = 0.0
    if train.offload_optimizer:
        offload += optim
        optim = 0.0
    if train.offload_params and stage == 3:
        offload += weights
        weights = 0.0
    if train.lora is not None:  # adapters only: ~1% of parameters carry gradients and Adam state
        trainable = 0.01 * p
        grads, optim = 2 * trainable / (gpus if stage >= 2 else 1), 12 * trainable / (gpus if stage >= 1 else 1)
    tokens = train.micro_batch_size * tokens_per_pair
    h, layers = arch.hidden, arch.layers
    patches = train.micro_batch_size * image_tokens * arch.merge if arch.vision_layers else 0
    vision = patches * arch.vision_hidden * arch.vision_layers
    if train.gradient_checkpointing:
        act = 2 * tokens * h * layers + 34 * tokens * h + 2 * vision
    else:
        act = 34 * tokens * h * layers + 34 * vision
    largest_layer = 2 * (4 * h * h + 3 * h * arch.intermediate)
    overhead = 2.5 * GIB + (2 * largest_layer if stage == 3 else 0) + 0.05 * (weights + grads + optim + act)
    return Plan(params=p, active=arch.active, weights=weights, gradients=grads, optimizer=optim, activations=act,
                overhead=overhead, cpu_offload=offload)


def format_plan(name: str, plan: Plan, *, gpus: int, gpu_mem_gib: float, train) -> str:
    fits = plan.total <= gpu_mem_gib * GIB * 0.92
    rows = [("weights (bf16)", plan.weights), ("gradients (bf16)", plan.gradients),
            ("optimizer (fp32 master + Adam)", plan.optimizer), ("activations", plan.activations),
            ("overhead", plan.overhead)]
    active = f" ({plan.active / 1e9:.2f}B active per token)" if plan.active < plan.params else ""
    lines = [f"{name}: {plan.params / 1e9:.2f}B parameters{active}, ZeRO-{train.zero_stage}"
             f"{', optimizer offload' if train.offload_optimizer else ''}"
             f"{', parameter offload' if train.offload_params else ''}"
             f"{', LoRA' if train.lora is not None else ''}"
             f"{', gradient checkpointing' if train.gradient_checkpointing else ''}, "
             f"micro-batch {train.micro_batch_size}, {gpus} GPUs"]
    lines += [f"  {label:<32} {value / GIB:>8.1f} GiB" for label, value in rows]
    lines.append(f"  {'total per GPU':<32} {plan.total / GIB:>8.1f} GiB of {gpu_mem_gib:g} GiB")
    if plan.cpu_offload:
        lines.append(f"  {'CPU memory per GPU (offload)':<32} {plan.cpu_offload / GIB:>8.1f} GiB")
    lines.append("fits" if fits else "does NOT fit: raise the ZeRO stage, offload, enable gradient checkpointing, "
                                     "lower the micro-batch or add GPUs")
    return "\n".join(lines)
