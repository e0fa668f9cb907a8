"""An ensemble of reward models: what `ensemble.yaml` holds, and how one member is served.

    # serve with `mrm-ray serve --ensemble THIS_FILE`; written by `mrm-ray ensemble fit`
    method: mean                # or z_mean, accuracy_weighted, confidence_weighted, min, uwo, lcb (ensemble.py)
    uncertainty_coef: 0.5       # uwo / lcb only
    members:
      - {name: a, path: runs/a/reward_model, weight: 1.0, modalities: [image, text], score_mean: 0.1, score_std: 1.2}
      - {name: text, path: s3://bucket/text_rm, modalities: [text], serving: {num_replicas: 2}}
      - {name: vlm, kind: judge, path: /models/Qwen2.5-VL-7B-Instruct, judge: {mode: verdict}}
    fitted_on: {...}            # what `mrm-ray ensemble fit` measured, for the record

A member is a scalar reward model (`kind: scalar`, the default) or a generative checkpoint asked to judge
(`kind: judge`, model/judge.py): its `judge` settings say how it is asked and how its reward is read.
Relative member paths resolve against the file's folder (or its URI's). A member's `serving` (its
Serve deployment's settings) defaults to the application's; the same `EnsembleMember` is what a Serve
config's inline `members:` holds (config/serve.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import AllowInfNan

from mrm_ray.config.core import VIDEO_ROUTES, NonNegative, Positive, PositiveFloat, config_dataclass
from mrm_ray.references import anchored, parse_tiny

CONSERVATIVE_METHODS = ("min", "uwo", "lcb")  # penalise the members' disagreement (ensemble.py)
METHODS = ("mean", "z_mean", "accuracy_weighted", "confidence_weighted", *CONSERVATIVE_METHODS)
UNCERTAINTY_COEF = 0.5  # uwo / lcb: how much of the members' variance (std) is taken off their mean
UncertaintyCoef = Annotated[float, Ge(0), AllowInfNan(False)]  # a finite coefficient >= 0
SurgePercent = Annotated[int, Ge(0), Le(100)]  # Serve's max_surge_percent: extra replicas while an update rolls
MODALITIES = ("image", "text")  # an item with any image is "image", else "text"
MAX_BATCH_TOKENS = 16384  # real tokens per packed scoring forward (packed rows hold no padding between groups)
BATCH_WAIT_S = 0.01  # how long a member's dynamic batch waits to fill
TOKEN_ENV = "MRM_SERVE_TOKEN"  # the environment variable that holds the endpoint's bearer token
Dtype = Literal["auto", "bfloat16", "float16", "float32"]  # auto: bfloat16 on a GPU, float32 on a CPU


MEMBER_KINDS = ("scalar", "judge")  # a reward checkpoint with its head, or a generative checkpoint asked to judge
JUDGE_MODES = ("verdict", "pairwise", "critique")
# the placeholders each mode's user text must hold, once each
JUDGE_PLACEHOLDERS = {"verdict": ("prompt", "response"), "critique": ("prompt", "response"),
                      "pairwise": ("prompt", "first", "second")}


@config_dataclass
class JudgeTemplate:
    """How a judge is asked: an optional system turn, then one user turn holding the prompt's images and this
    text with its placeholders filled ({prompt} and {response}; {first} and {second} for `pairwise`); the
    verdict token is read where the assistant's reply starts (`critique`: after the critique and `verdict`)."""

    user: str  # the user turn's text, with the mode's placeholders ({{ and }} for literal braces)
    system: str = ""  # a system turn before it ("": none)
    verdict: str = ""  # critique only: written after the generated critique, in the reply; the verdict follows


_QUESTION = "Is the response correct, helpful and faithful to the question and to any image?"
DEFAULT_TEMPLATES = {  # the shipped templates, one per mode (a member's `judge.template` replaces it)
    "verdict": JudgeTemplate(
        system="You judge answers to questions about images and text.",
        user="{prompt}\n\n[Response]\n{response}\n[End of response]\n\n" + _QUESTION + " Answer Yes or No."),
    "pairwise": JudgeTemplate(
        system="You judge answers to questions about images and text.",
        user="{prompt}\n\n[Response A]\n{first}\n[End of response A]\n\n[Response B]\n{second}\n"
             "[End of response B]\n\nWhich response is correct, helpful and faithful to the question and to any "
             "image? Answer A or B."),
    "critique": JudgeTemplate(
        system="You judge answers to questions about images and text.",
        user="{prompt}\n\n[Response]\n{response}\n[End of response]\n\n" + _QUESTION +
             " Write a short critique first.",
        verdict="\n\nFinal verdict (Yes or No):\n"),
}


@config_dataclass
class JudgeConfig:
    """A judge member's settings (`kind: judge`, model/judge.py): how it is asked and how its reward is read.
    verdict: log P(yes) - log P(no) for the reply's first token, one forward; pairwise (pairs only):
    log P(first) - log P(second), averaged over both orders; critique: up to `max_critique_tokens`
    generated, then the verdict read as in `verdict`."""

    mode: Literal[JUDGE_MODES] = "verdict"  # verdict | pairwise | critique
    template: JudgeTemplate | None = None  # None: the shipped template of the mode (DEFAULT_TEMPLATES)
    # verdict, critique: the token read as "good" (one token in the checkpoint's tokenizer; `yes_token`, not
    # `yes`: YAML reads a bare yes / no key as a boolean)
    yes_token: str = "Yes"
    no_token: str = "No"  # verdict, critique: the token read as "bad"
    first_token: str = "A"  # pairwise: the token naming the first response
    second_token: str = "B"  # pairwise: the token naming the second response
    max_critique_tokens: Positive = 256  # critique: the most tokens generated before the verdict
    critique_timeout_s: PositiveFloat = 60.0  # critique: a generation still running then gives no score (NaN)

    @property
    def prompt(self) -> JudgeTemplate:
        """The template in use: the member's, else the mode's shipped one."""
        return self.template or DEFAULT_TEMPLATES[self.mode]

    @property
    def tokens(self) -> tuple[str, str]:
        """(the token whose log-probability counts for, the one that counts against) in this mode."""
        return (self.first_token, self.second_token) if self.mode == "pairwise" else (self.yes_token, self.no_token)

    def problems(self) -> list[str]:
        """What is wrong with this judge's template for its mode, each naming the setting."""
        import string

        out = []
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.prompt.user) if f is not None]
        except ValueError as exc:
            return [f"judge.template.user cannot be filled: {exc} (write {{{{ and }}}} for literal braces)"]
        for name in JUDGE_PLACEHOLDERS[self.mode]:
            if fields.count(name) != 1:
                out.append(f"judge.template.user must hold {{{name}}} once for mode {self.mode} "
                           f"(found {fields.count(name)} times)")
        for name in sorted(set(fields) - set(JUDGE_PLACEHOLDERS[self.mode])):
            out.append(f"judge.template.user has {{{name}}}, which mode {self.mode} does not fill "
                       f"(it fills {', '.join('{' + f + '}' for f in JUDGE_PLACEHOLDERS[self.mode])})")
        if self.mode == "critique" and not self.prompt.verdict:
            out.append("judge.template.verdict must say what follows the critique in mode critique "
                       "(e.g. \"\\n\\nFinal verdict (Yes or No):\\n\")")
        if len(set(self.tokens)) < 2:
            out.append(f"judge tokens must differ, got {self.tokens}")
        return out


@config_dataclass
class MemberServing:
    """How one member is deployed on Ray Serve; `max_ongoing_requests` must let batches fill (Serve's default 5
    caps them)."""

    max_batch_size: Positive = 16  # responses (or pairs) per dynamic batch
    batch_wait_timeout_s: NonNegative = BATCH_WAIT_S  # how long a batch waits to fill
    max_batch_tokens: Positive = MAX_BATCH_TOKENS  # real tokens per forward
    max_ongoing_requests: Positive = 32  # calls queued per replica; about 2x the batch
    max_queued_requests: Positive = 64  # calls waiting for a replica at the ingress; past them, 503 + Retry-After
    num_replicas: Positive | None = None  # fixed replicas; None = autoscaling_config
    autoscaling_config: dict[str, Any] = field(  # Serve's, when num_replicas is None
        default_factory=lambda: {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16})
    num_cpus: NonNegative = 1.0  # CPUs each replica holds
    num_gpus: float | Literal["auto"] = "auto"  # auto: 1 when the cluster has GPUs
    max_surge_percent: SurgePercent = 100  # on an update, new replicas start before the old stop (0: stop first)
    resources: dict[str, NonNegative] = field(default_factory=dict)  # custom resources, e.g. {reward_serving: 1}
    dtype: Dtype = "auto"  # the member's weights: auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    video_route: Literal[VIDEO_ROUTES] = "auto"  # videos: video (the family's video processor) | frames | auto


@config_dataclass
class MemberSettings:
    """What a running member reloads in place (its Serve `user_config`, applied by `reconfigure`): a new
    checkpoint, its normalisation, its batching."""

    path: str
    kind: Literal[MEMBER_KINDS] = "scalar"
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    score_mean: float | None = None
    score_std: float | None = None
    max_batch_tokens: Positive = MAX_BATCH_TOKENS
    batch_wait_timeout_s: NonNegative = BATCH_WAIT_S
    dtype: Dtype = "auto"
    video_route: Literal[VIDEO_ROUTES] = "auto"


@config_dataclass
class EnsembleMember:
    """One reward model in the ensemble."""

    name: str  # the member's name in responses, metrics and routing
    path: str  # a reward checkpoint directory, an s3:// URI of one, or tiny[:FAMILY][@SEED] (references.py)
    kind: Literal[MEMBER_KINDS] = "scalar"  # scalar: a reward model; judge: a generative checkpoint with its LM head
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # kind judge: its mode, template and tokens
    weight: NonNegative = 1.0  # used by the *_weighted methods; `mrm-ray ensemble fit` sets it
    modalities: tuple[Literal["image", "text"], ...] = MODALITIES  # which inputs this member scores
    score_mean: float | None = None  # z-normalisation; None = the checkpoint's own (model/checkpoints.py)
    score_std: float | None = None  # z-normalisation; None = the checkpoint's own
    serving: MemberServing | None = None  # its Serve deployment; None = the application's `serving`

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"member name must be non-empty without '/', got {self.name!r}")
        parse_tiny(self.path)  # a malformed tiny reference, named now
        if self.score_std is not None and self.score_std <= 0:
            raise ValueError(f"member {self.name}: score_std must be > 0, got {self.score_std}")
        if self.kind == "scalar" and self.judge != JudgeConfig():
            raise ValueError(f"member {self.name}: judge settings are for `kind: judge` members; this one is scalar")
        if self.kind == "judge" and (problems := self.judge.problems()):
            raise ValueError(f"member {self.name}: " + "; ".join(problems))

    def settings(self, serving: MemberServing) -> MemberSettings:
        """What this member's replicas load, served with `serving`."""
        return MemberSettings(path=self.path, kind=self.kind, judge=self.judge, score_mean=self.score_mean,
                              score_std=self.score_std, max_batch_tokens=serving.max_batch_tokens,
                              batch_wait_timeout_s=serving.batch_wait_timeout_s, dtype=serving.dtype,
                              video_route=serving.video_route)


@config_dataclass
class EnsembleConfig:
    """What `ensemble.yaml` holds: members, aggregation method, and how it was fitted."""

    members: tuple[EnsembleMember, ...]
    # the aggregate: mean, z_mean, accuracy_weighted, confidence_weighted, min, uwo, lcb
    method: Literal[METHODS] = "mean"
    uncertainty_coef: UncertaintyCoef = UNCERTAINTY_COEF  # uwo: mean - coef x variance; lcb: mean - coef x std
    fitted_on: dict = field(default_factory=dict)  # validation set and per-member metrics, for the record

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique, got {names}")
        for modality in MODALITIES:
            if not any(modality in m.modalities for m in self.members):
                raise ValueError(f"no member scores {modality} inputs; list {modality!r} in some member's modalities")
        if self.method.endswith("_weighted") and not any(m.weight > 0 for m in self.members):
            raise ValueError("every member weight is 0")

    def anchored(self, base=None) -> "EnsembleConfig":
        """Relative member paths resolved against `base` (the file's folder, or its URI's)."""
        return dataclasses.replace(self, members=tuple(dataclasses.replace(m, path=anchored(m.path, base))
                                                       for m in self.members))

    def to_yaml_dict(self) -> dict:
        """The file's contents: every member's settings, a member's `serving` only where it has its own."""
        def member(m: EnsembleMember) -> dict:
            out = {"name": m.name, "path": m.path, "weight": m.weight, "modalities": list(m.modalities),
                   "score_mean": m.score_mean, "score_std": m.score_std}
            if m.kind == "judge":
                out |= {"kind": m.kind, "judge": dataclasses.asdict(m.judge)}
            return out | ({"serving": dataclasses.asdict(m.serving)} if m.serving is not None else {})

        return {"method": self.method, "uncertainty_coef": self.uncertainty_coef,
                "members": [member(m) for m in self.members], "fitted_on": self.fitted_on}
