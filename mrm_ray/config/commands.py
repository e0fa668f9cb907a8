"""The settings of the commands around the jobs: evaluation, labelling, ensemble fitting, data inspection and preparation,
and the memory plan. Each command's flags are spellings of these fields (`--batch-size 32` is
`batch_size=32`), so a command also takes `--config FILE` and `a.b=value` overrides, checked as every
config is."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Annotated, Literal

from annotated_types import Ge

from mrm_ray.config.core import VIDEO_ROUTES, NonNegative, Positive, PositiveFloat, config_dataclass
from mrm_ray.config.ensemble import CONSERVATIVE_METHODS, MAX_BATCH_TOKENS, METHODS, UNCERTAINTY_COEF, UncertaintyCoef
from mrm_ray.config.run import DataConfig
from mrm_ray.config.tracking import TrackingConfig
from mrm_ray.references import anchored

EQUAL_WEIGHT_METHODS = ("mean", "z_mean", *CONSERVATIVE_METHODS)  # what an evaluation aggregates with no fitted weights


def _anchored_values(mapping: dict[str, str]) -> dict[str, str]:
    return {name: anchored(path) for name, path in mapping.items()}


@config_dataclass
class EvalConfig:
    """`mrm-ray evaluate`: reward models (and ensembles) scored on benchmarks, written as a report."""

    models: dict[str, str] = field(default_factory=dict)  # name -> reward model (a path, an s3:// URI, tiny:...)
    ensemble: str | None = None  # ensemble.yaml: its members (instead of models), and its method as one more row
    bench: dict[str, str] = field(default_factory=dict)  # benchmark (or reader) name -> its file or folder
    image_root: str | None = None  # folder the benchmark image paths are relative to
    stand_in_images: str | None = None  # photos used where a benchmark image is missing (smoke runs)
    out: str = "eval-report"  # report folder (a path or s3:// URI)
    batch_size: Positive = 16  # pairs per scoring batch
    actors_per_model: Positive = 1  # scoring actors per member
    gpus_per_model: NonNegative = 0.0  # GPUs each scoring actor holds
    cpus_per_model: PositiveFloat = 1.0  # CPUs each scoring actor holds
    limit: Positive | None = None  # first N good pairs per benchmark
    methods: tuple[Literal[EQUAL_WEIGHT_METHODS], ...] = EQUAL_WEIGHT_METHODS  # one report row (and ECE) each
    uncertainty_coef: UncertaintyCoef = UNCERTAINTY_COEF  # of the uwo / lcb rows (ensemble.yaml's row: its own)
    max_batch_tokens: Positive = MAX_BATCH_TOKENS  # real tokens per forward
    video_route: Literal[VIDEO_ROUTES] = "auto"  # videos: video (the family's video processor) | frames | auto
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow / W&B: the figures and the report

    def __post_init__(self) -> None:
        if not self.bench:
            raise ValueError("bench: give at least one benchmark (--bench NAME=PATH)")
        if not self.models and self.ensemble is None:
            raise ValueError("models: give --models or --ensemble")

    def anchored(self, base=None) -> "EvalConfig":
        return dataclasses.replace(
            self, models=_anchored_values(self.models), bench=_anchored_values(self.bench), out=anchored(self.out),
            ensemble=self.ensemble and anchored(self.ensemble),
            image_root=self.image_root and anchored(self.image_root),
            stand_in_images=self.stand_in_images and anchored(self.stand_in_images), tracking=self.tracking.anchored())


@config_dataclass
class LabelConfig:
    """`mrm-ray label`: unlabelled records (a prompt, its images, two or more responses) labelled by a judge or an
    ensemble on Ray Data, written as preference pairs with their provenance (eval/label.py)."""

    labeller: str  # ensemble.yaml whose members label (a judge alone: an ensemble of one member)
    data: dict[str, str] = field(default_factory=dict)  # unlabelled (or any reader / benchmark) name -> its file
    out: str = "labels"  # the output folder (a path or s3:// URI); a re-run skips what it holds
    image_root: str | None = None  # folder the records' image file names are relative to (default: the file's)
    min_margin: NonNegative = 0.0  # drop labels whose |margin| (on the ensemble method's scale) is below this
    batch_size: Positive = 16  # records per labelling batch
    records_per_part: Positive = 256  # records per written part (what a crash can lose at most)
    actors: Positive = 1  # labelling actors, each holding every member
    gpus_per_actor: NonNegative = 0.0  # GPUs each actor holds
    cpus_per_actor: PositiveFloat = 1.0  # CPUs each actor holds
    max_batch_tokens: Positive = MAX_BATCH_TOKENS  # real tokens per forward
    limit: Positive | None = None  # first N good records per data file

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("data: give the records to label (--data unlabelled=PATH, or READER=PATH)")

    def anchored(self, base=None) -> "LabelConfig":
        return dataclasses.replace(self, labeller=anchored(self.labeller), data=_anchored_values(self.data),
                                   image_root=self.image_root and anchored(self.image_root), out=anchored(self.out))


@config_dataclass
class FitConfig:
    """`mrm-ray ensemble fit`: members scored on validation pairs, written as ensemble.yaml."""

    models: dict[str, str] = field(default_factory=dict)  # name -> reward model
    data: dict[str, str] = field(default_factory=dict)  # benchmark or reader name -> validation pairs
    method: Literal[METHODS] = "mean"  # the aggregate the weights are fitted for
    text_members: tuple[str, ...] = ()  # route text-only inputs to these members only, image inputs to the others
    image_root: str | None = None  # folder the data's image paths are relative to
    batch_size: Positive = 16  # pairs per scoring batch
    limit: Positive | None = None  # first N good pairs per data file
    out: str = "ensemble.yaml"  # where ensemble.yaml goes

    def __post_init__(self) -> None:
        if not self.models or not self.data:
            raise ValueError("give the members (--models NAME=PATH ...) and validation data (--data READER=PATH)")
        if unknown := set(self.text_members) - set(self.models):
            raise ValueError(f"text_members {sorted(unknown)} are not among the models {sorted(self.models)}")

    def anchored(self, base=None) -> "FitConfig":
        return dataclasses.replace(self, models=_anchored_values(self.models), data=_anchored_values(self.data),
                                   image_root=self.image_root and anchored(self.image_root), out=anchored(self.out))


@config_dataclass
class DataCommandConfig:
    """`mrm-ray data inspect | prepare`: a mixture checked (and written as Parquet shards)."""

    mixture: str = ""  # a mixture YAML, or a shipped mixture's name
    model: str = ""  # the checkpoint whose processor encodes the data
    paths: dict[str, str] = field(default_factory=dict)  # source -> path, filling in or overriding the mixture's
    image_roots: dict[str, str] = field(default_factory=dict)  # source -> its image root
    skip_missing: bool = False  # drop sources that have no path
    run_dir: str = "runs/data"  # where the quarantine file goes
    workers: Positive = 1  # preprocessing actors
    out: str | None = None  # prepare: the output folder
    encoded: bool = False  # prepare: model-ready columns, not canonical pairs
    data: DataConfig = field(default_factory=DataConfig)  # the checks (trailing key=value settings)

    def __post_init__(self) -> None:
        if not self.mixture or not self.model:
            raise ValueError("give the mixture and --model (the checkpoint whose processor encodes the data)")

    def anchored(self, base=None) -> "DataCommandConfig":
        return dataclasses.replace(self, model=anchored(self.model), run_dir=anchored(self.run_dir),
                                   out=self.out and anchored(self.out))


@config_dataclass
class PlanConfig:
    """`mrm-ray plan`: per-GPU memory of a training preset with a published architecture."""

    preset: str  # qwen2_5_vl_3b ... qwen3_5_27b (or its YAML)
    gpus: Positive  # GPUs the run trains on
    gpu_mem: PositiveFloat  # GiB per GPU
    tokens: Positive = 4096  # packed tokens per pair (prompt + both responses)
    image_tokens: Annotated[int, Ge(0)] = 1280  # image tokens per pair
