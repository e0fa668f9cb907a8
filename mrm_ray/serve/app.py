"""The serving application: a FastAPI ingress composing one `RewardMember` per ensemble member.

`build_app(args) -> Application` is the import path for `serve run` / `serve deploy`
(`mrm_ray.serve.app:build_app`); its `args` are `AppArgs`. The ingress validates requests,
routes items to members by modality, fans chunks out through `DeploymentHandle`s, and
aggregates with the ensemble's method.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import time
import uuid
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from ray import serve
from ray.serve.config import BackpressureConfig

from mrm_ray.ensemble import METHODS, Aggregate, EnsembleConfig, EnsembleMember, aggregate, load_ensemble, routing_mask
from mrm_ray.rewards import answer_matches, hybrid_reward, sigmoid
from mrm_ray.serve import api
from mrm_ray.serve.member import RewardMember

logger = logging.getLogger("ray.serve")


# ------------------------------------------------------------------------------ arguments
class MemberServing(BaseModel):
    """How one member is deployed; `max_ongoing_requests` must let batches fill (Serve's default 5 caps them)."""

    model_config = ConfigDict(extra="forbid")
    max_batch_size: int = Field(16, ge=1, description="responses (or pairs) per dynamic batch")
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    max_batch_tokens: int = Field(16384, ge=1, description="padded tokens per forward")
    max_ongoing_requests: int = Field(32, ge=1, description="calls queued per replica; about 2x the batch")
    max_queued_requests: int = Field(64, ge=1, description="calls waiting for a replica at the ingress; past "
                                                           "them, 503 + Retry-After (load shedding)")
    num_replicas: int | None = Field(None, ge=1, description="fixed replicas; None = autoscaling_config")
    autoscaling_config: dict[str, Any] = Field(
        default_factory=lambda: {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16})
    num_cpus: float = 1.0
    num_gpus: float | Literal["auto"] = "auto"  # auto: 1 when the cluster has GPUs
    resources: dict[str, float] = Field(default_factory=dict, description="custom resources, e.g. "
                                        "{reward_serving: 1} to land on the cluster's serving node type")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"


class MemberArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    path: str
    weight: float = 1.0
    modalities: list[Literal["image", "text"]] = ["image", "text"]
    score_mean: float | None = None
    score_std: float | None = None
    serving: MemberServing | None = None  # None = AppArgs.serving


class IngressServing(BaseModel):
    """The HTTP ingress. Load shedding: past `max_ongoing_requests` + `max_queued_requests` HTTP requests
    (per replica), and past a member's `max_ongoing_requests` x replicas + `max_queued_requests` calls,
    requests answer 503 with `Retry-After: retry_after_s` at once instead of queuing without bound."""

    model_config = ConfigDict(extra="forbid")
    num_replicas: int = 1
    max_ongoing_requests: int = 1024
    max_queued_requests: int = Field(1024, ge=1, description="HTTP requests waiting for an ingress replica")
    retry_after_s: float = Field(1.0, ge=0, description="the Retry-After of a shed request's 503")
    num_cpus: float = 1.0


class AppArgs(BaseModel):
    """`args:` of the Serve config: the ensemble (a file or inline members), limits, auth."""

    model_config = ConfigDict(extra="forbid")
    ensemble: str | None = Field(None, description="ensemble.yaml from `mrm-ray ensemble fit`")
    members: list[MemberArgs] = Field(default_factory=list, description="inline members (instead of `ensemble`)")
    method: Literal[METHODS] | None = None  # overrides the ensemble file's
    serving: MemberServing = Field(default_factory=MemberServing)
    ingress: IngressServing = Field(default_factory=IngressServing)
    limits: api.Limits = Field(default_factory=api.Limits)
    auth_token: SecretStr | None = Field(None, description="bearer token; prefer auth_token_env")
    auth_token_env: str = "MRM_SERVE_TOKEN"  # the ingress reads the token from this variable when set

    def ensemble_config(self) -> EnsembleConfig:
        if self.ensemble and self.members:
            raise ValueError("give either `ensemble` (a file) or inline `members`, not both")
        if self.ensemble:
            config = load_ensemble(self.ensemble)
        elif self.members:
            config = EnsembleConfig(members=[EnsembleMember(
                name=m.name, path=m.path, weight=m.weight, modalities=tuple(m.modalities),
                score_mean=m.score_mean, score_std=m.score_std) for m in self.members])
        else:
            raise ValueError("no members: set `ensemble: path/to/ensemble.yaml` or list `members`")
        return EnsembleConfig(members=config.members, method=self.method or config.method,
                              fitted_on=config.fitted_on)


def member_calls(inputs: list[dict], idx: list[int], step: int, method: str) -> list[tuple[list, list[dict]]]:
    """A member's routed inputs as calls of at most `step` units (a pair, or a group's response),
    each with the (input, response) it scores. A group larger than a call is split over calls,
    its prompt sent with each part."""
    if method == "compare":
        return [([(j, 0) for j in idx[a:a + step]], [inputs[j] for j in idx[a:a + step]])
                for a in range(0, len(idx), step)]
    units = [(j, k) for j in idx for k in range(len(inputs[j]["responses"]))]
    calls = []
    for a in range(0, len(units), step):
        part, payload = units[a:a + step], []
        for j, k in part:
            if not payload or payload[-1][0] != j:
                payload.append((j, []))
            payload[-1][1].append(inputs[j]["responses"][k])
        calls.append((part, [{**inputs[j], "responses": texts} for j, texts in payload]))
    return calls


def deployment_name(member: str) -> str:
    return f"member-{member}"


def _num_gpus(value: float | str) -> float:
    if value != "auto":
        return float(value)
    import ray

    return 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def build_app(args: dict) -> serve.Application:
    """The Serve application for `args` (what `serve run`/`serve deploy` call with the config's `args`)."""
    return application(args)


def application(args: dict | AppArgs, *, runtime_env: dict | None = None) -> serve.Application:
    """The application for `args`; `runtime_env` (the application's, when `mrm-ray serve` deploys it, as
    `serve deploy` would apply it) goes to every replica."""
    env = {"runtime_env": runtime_env} if runtime_env else {}
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    ensemble = args.ensemble_config()
    overrides = {m.name: m.serving for m in args.members if m.serving is not None}
    handles, spec_members = {}, []
    shed = BackpressureConfig(status_code=503, retry_after_s=args.ingress.retry_after_s)
    for member in ensemble.members:
        s = overrides.get(member.name, args.serving)
        scaling = {"num_replicas": s.num_replicas} if s.num_replicas else {"autoscaling_config": s.autoscaling_config}
        user_config = {"path": member.path, "score_mean": member.score_mean, "score_std": member.score_std,
                       "max_batch_tokens": s.max_batch_tokens, "batch_wait_timeout_s": s.batch_wait_timeout_s,
                       "dtype": s.dtype}
        handles[member.name] = RewardMember.options(
            name=deployment_name(member.name), max_ongoing_requests=s.max_ongoing_requests,
            max_queued_requests=s.max_queued_requests, backpressure_config=shed, user_config=user_config,
            ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": _num_gpus(s.num_gpus), "resources": s.resources,
                               **env},
            **scaling,
        ).bind(member.name, max_batch_size=s.max_batch_size, defaults=user_config)
        spec_members.append({"name": member.name, "weight": member.weight, "modalities": list(member.modalities),
                             "max_batch_size": s.max_batch_size})
    spec = {"method": ensemble.method, "members": spec_members, "limits": args.limits.model_dump(),
            "auth_token": args.auth_token.get_secret_value() if args.auth_token else None,
            "auth_token_env": args.auth_token_env, "retry_after_s": args.ingress.retry_after_s}
    return Ingress.options(num_replicas=args.ingress.num_replicas,
                           max_ongoing_requests=args.ingress.max_ongoing_requests,
                           max_queued_requests=args.ingress.max_queued_requests, backpressure_config=shed,
                           ray_actor_options={"num_cpus": args.ingress.num_cpus, **env}).bind(spec, handles)


# ------------------------------------------------------------------------------- ingress
http = FastAPI(title="mrm-ray reward ensemble",
               description="Multimodal reward-model ensemble for RL rollouts: per-member scores, an "
                           "aggregate and the members' disagreement. Images only inline (base64/data URLs).")


@http.exception_handler(api.BadInput)
async def _bad_input(request: Request, exc: api.BadInput) -> JSONResponse:
    return JSONResponse({"error": str(exc), "field": exc.field}, status_code=exc.status)


@http.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    def where(e):  # "body.items.0.response" -> "items[0].response"
        if e.get("type") == "json_invalid":  # its loc is (body, character offset)
            return "body"
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        return "".join(f"[{x}]" if x.isdigit() else f".{x}" for x in loc).lstrip(".") or "body"
    def text(e):
        if e.get("type") == "json_invalid":
            offset = e.get("loc", ("body", "?"))[-1]
            return f"malformed JSON at character {offset} ({e.get('ctx', {}).get('error', 'cannot parse')})"
        if e.get("type") == "model_attributes_type" and where(e) == "body":
            return "the body must be a JSON object (send Content-Type: application/json)"
        return e.get("msg")
    message = "; ".join(f"{where(e)}: {text(e)}" for e in errors[:5])
    return JSONResponse({"error": message, "field": where(errors[0]) if errors else "body",
                         "detail": json.loads(json.dumps(errors, default=str))}, status_code=422)


class BodyLimit:
    """ASGI middleware: a body over `Limits.max_request_bytes` gets a 413 naming `body`, whether it
    declares its length or streams chunks without one (counted as they arrive; reading stops there)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        limit = api.max_request_bytes()
        if scope["type"] != "http" or not limit:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, f"request body of {int(declared)} bytes is over the limit "
                               f"of {limit}")
            return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > limit:
                await self._refuse(scope, receive, send, f"request body of more than {limit} bytes (streamed) is "
                                   "over the limit")
                return
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, receive, send, message: str) -> None:
        await JSONResponse({"error": message, "field": "body"}, status_code=413)(scope, receive, send)


class RequestDeadline:
    """ASGI middleware: `X-Request-Timeout: <seconds>` starts the request's clock (`api.time_left`); a value
    that is not a positive number gets a 422 naming the header."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        value = dict(scope.get("headers") or ()).get(api.TIMEOUT_HEADER.lower().encode()) \
            if scope["type"] == "http" else None
        if value is None:
            await self.app(scope, receive, send)
            return
        try:
            seconds = api.parse_timeout(value.decode("latin-1"))
        except api.BadInput as exc:
            await JSONResponse({"error": str(exc), "field": exc.field}, status_code=422)(scope, receive, send)
            return
        token = api.set_deadline(seconds)
        try:
            await self.app(scope, receive, send)
        finally:
            api.reset_deadline(token)


http.add_middleware(BodyLimit)
http.add_middleware(RequestDeadline)


class MemberFailed(RuntimeError):
    pass


class Overloaded(RuntimeError):
    """A member's queue is full: the request is shed (503 + Retry-After), not queued."""


class DeadlinePassed(RuntimeError):
    """The request's X-Request-Timeout ran out before its batch ran: dropped, not computed (504)."""


@serve.deployment(name="Ingress")
@serve.ingress(http)
class Ingress:
    def __init__(self, spec: dict[str, Any], members: dict[str, Any]) -> None:
        self.method = spec["method"]
        self.members = spec["members"]
        self.handles = members
        self.limits = api.Limits(**spec["limits"])
        self.weights = np.array([m["weight"] for m in self.members], dtype=np.float64)
        self.retry_after_s = spec.get("retry_after_s", 1.0)
        self._token = spec.get("auth_token") or os.environ.get(spec.get("auth_token_env") or "", "") or None
        # Serve runs a frozen copy of `http` and pickles this class by value: state shared with
        # the middleware goes through a module both import by reference
        api.set_max_request_bytes(self.limits.max_request_bytes)
        logger.info("reward ensemble: %s over %s; auth %s", self.method, [m["name"] for m in self.members],
                    "on" if self._token else "off")

    # ------------------------------------------------------------------------ plumbing
    def _authorize(self, authorization: str | None) -> JSONResponse | None:
        if self._token is None:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._token.encode()):
            return None
        return JSONResponse({"error": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})

    async def _call(self, name: str, method: str, inputs: list[dict]) -> dict:
        """One member call carrying the request's time left, retried while a dead replica is replaced."""
        from ray.exceptions import RayActorError

        handle = getattr(self.handles[name], method)
        for attempt in range(4):
            left = api.time_left()
            if left is not None and left <= 0:
                raise DeadlinePassed()
            try:
                reply = await handle.remote(inputs, left)
            except RayActorError:
                if attempt == 3:
                    raise
                await asyncio.sleep(0.5 * 2 ** attempt)
            else:
                if reply.get("expired"):
                    raise DeadlinePassed()
                return reply
        raise AssertionError("unreachable")

    async def _gather(self, calls: list) -> list[dict]:
        """All member calls of one request. A full member queue sheds the request (no waiting in line); a
        call whose deadline passes before its batch runs is dropped by the member; the first failure
        cancels the rest (a cancelled call still waiting in a member's batch queue is dropped too)."""
        from ray.serve.exceptions import BackPressureError

        tasks = [asyncio.ensure_future(c) for c in calls]
        try:
            return await asyncio.gather(*tasks)
        except DeadlinePassed:
            raise
        except BackPressureError as exc:
            raise Overloaded(str(exc)) from None
        except Exception as exc:
            raise MemberFailed(f"a member failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
        finally:
            for task in tasks:
                task.cancel()

    async def _fan_out(self, method: str, inputs: list[dict], what: str) -> tuple[np.ndarray, list, dict]:
        """Member values per unit (NaN where not routed): per pair (chosen, rejected) for `compare`, per
        response of each group in order for `score`; each member's stats, and versions."""
        has_image = [bool(x["images"]) for x in inputs]
        mask = routing_mask([m["modalities"] for m in self.members], has_image)
        first = np.cumsum([0] + [len(x.get("responses", [None])) for x in inputs])
        calls = []
        for m, member in enumerate(self.members):
            for units, payload in member_calls(inputs, np.flatnonzero(mask[m]).tolist(), member["max_batch_size"],
                                                 method):
                calls.append((m, units, self._call(member["name"], method, payload)))
        replies = await self._gather([c[2] for c in calls])
        width = 2 if method == "compare" else 1
        values = np.full((len(self.members), int(first[-1]), width), np.nan)
        stats: list[dict] = [{} for _ in self.members]
        versions: dict[str, str] = {}
        for (m, units, _), reply in zip(calls, replies):
            name = self.members[m]["name"]
            for i, message in reply["errors"].items():
                j = sorted({j for j, _ in units})[int(i)]
                raise api.BadInput(f"{what}[{j}]", f"member {name}: {message}")
            flat = [v for value in reply["values"] for v in (value if method == "score" else [value])]
            at = [first[j] + k for j, k in units]
            values[m, at] = np.asarray(flat, dtype=np.float64).reshape(len(units), width)
            stats[m] = {"score_mean": reply["score_mean"], "score_std": reply["score_std"]}
            versions[name] = reply["version"]
        for m, member in enumerate(self.members):  # members that scored nothing here keep neutral stats
            stats[m] = stats[m] or {"score_mean": 0.0, "score_std": 1.0}
        return values, stats, versions

    def _aggregate(self, scores: np.ndarray, stats: list[dict]) -> Aggregate:
        return aggregate(scores, method=self.method, weights=self.weights,
                         means=[s["score_mean"] for s in stats], stds=[s["score_std"] for s in stats])

    def _version(self, versions: dict[str, str]) -> str:
        key = json.dumps({"method": self.method, "weights": self.weights.tolist(), "members": versions},
                         sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    async def _score(self, request: api.ScoreRequest) -> api.ScoreResponse:
        items = await asyncio.to_thread(api.prepare_items, request, self.limits)
        values, stats, versions = await self._fan_out("score", items, "items")
        scores = values[..., 0]
        agg = self._aggregate(scores, stats)
        results = []
        units = [(item, text) for item in request.items for text in item.texts()]  # one result per response
        for j, (item, text) in enumerate(units):
            model_reward = float(agg.reward[j])
            matched, reward = None, model_reward
            if request.reward == "hybrid":
                matched = answer_matches(text, item.reference)
                reward = hybrid_reward(text, item.reference, model_reward)
            results.append(api.ItemScore(
                reward=reward, model_reward=model_reward, std=float(agg.std[j]), matched_reference=matched,
                scores={m["name"]: float(scores[k, j]) for k, m in enumerate(self.members)
                        if not np.isnan(scores[k, j])}))
        return api.ScoreResponse(results=results, model_version=self._version(versions), members=versions)

    # ---------------------------------------------------------------------------- routes
    @http.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "members": len(self.members)}

    @http.get("/v1/models")
    async def models(self, authorization: str | None = Header(None)):
        if denied := self._authorize(authorization):
            return denied
        infos = await asyncio.gather(*(self.handles[m["name"]].info.remote() for m in self.members))
        members = [{**info, "weight": m["weight"], "modalities": m["modalities"]}
                   for m, info in zip(self.members, infos)]
        return {"method": self.method, "model_version": self._version({i["name"]: i.get("version") for i in infos}),
                "members": members, "limits": self.limits.model_dump()}

    @http.post("/v1/score", response_model=api.ScoreResponse)
    async def score(self, request: api.ScoreRequest, authorization: str | None = Header(None)):
        if denied := self._authorize(authorization):
            return denied
        return await self._guard(self._score(request))

    @http.post("/v1/compare", response_model=api.CompareResponse)
    async def compare(self, request: api.CompareRequest, authorization: str | None = Header(None)):
        if denied := self._authorize(authorization):
            return denied
        return await self._guard(self._compare(request))

    @http.post("/get_reward", response_model=api.OpenRLHFResponse)
    async def get_reward(self, request: api.OpenRLHFRequest, reward: Literal["model", "hybrid"] = "model",
                         authorization: str | None = Header(None)):
        """OpenRLHF's remote reward protocol; `?reward=hybrid` uses `labels` as reference answers."""
        if denied := self._authorize(authorization):
            return denied
        scored = await self._guard(self._score(api.ScoreRequest(
            items=api.openrlhf_items(request).items, reward=reward)))
        if isinstance(scored, JSONResponse):
            return scored
        rewards = [r.reward for r in scored.results]
        logs = {"ensemble_std": [r.std for r in scored.results],
                **{f"score_{m['name']}": [r.scores.get(m["name"], float("nan")) for r in scored.results]
                   for m in self.members}}
        return api.OpenRLHFResponse(rewards=rewards, scores=rewards, extra_logs=logs)

    # vLLM's pooling routes (with the /v1 spellings): a client written for a vLLM reward server, veRL's
    # discriminative-RM client among them, works unchanged; one label, the ensemble's reward
    @http.post("/classify")
    @http.post("/v1/classify")
    async def classify(self, request: api.PoolingRequest, authorization: str | None = Header(None)):
        if denied := self._authorize(authorization):
            return denied
        return await self._guard(self._pooled(request, "classify"))

    @http.post("/pooling")
    @http.post("/v1/pooling")
    async def pooling(self, request: api.PoolingRequest, authorization: str | None = Header(None)):
        if denied := self._authorize(authorization):
            return denied
        return await self._guard(self._pooled(request, "pooling"))

    async def _pooled(self, request: api.PoolingRequest, route: str) -> dict:
        scored = await self._score(api.pooling_items(request))
        values = [r.model_reward if request.use_activation is False else sigmoid(r.model_reward)
                  for r in scored.results]
        if route == "classify":
            data = [{"index": i, "label": "reward", "probs": [v], "num_classes": 1} for i, v in enumerate(values)]
        else:
            data = [{"index": i, "object": "pooling", "data": [v]} for i, v in enumerate(values)]
        return {"id": f"{'classify' if route == 'classify' else 'pool'}-{uuid.uuid4().hex}", "object": "list",
                "created": int(time.time()), "model": request.model or "reward-ensemble", "data": data,
                "usage": {"prompt_tokens": 0, "total_tokens": 0, "completion_tokens": 0,
                          "prompt_tokens_details": None}}

    async def _compare(self, request: api.CompareRequest) -> api.CompareResponse:
        pairs = await asyncio.to_thread(api.prepare_pairs, request, self.limits)
        values, stats, versions = await self._fan_out("compare", pairs, "pairs")
        chosen = self._aggregate(values[..., 0], stats)
        rejected = self._aggregate(values[..., 1], stats)
        margins = values[..., 0] - values[..., 1]
        spread = self._aggregate(margins, [{"score_mean": 0.0, "score_std": s["score_std"]} for s in stats])
        results = []
        for j in range(len(pairs)):
            margin = float(chosen.reward[j] - rejected.reward[j])
            results.append(api.PairScore(
                prob_chosen=sigmoid(margin), margin=margin, std=float(spread.std[j]),
                margins={m["name"]: float(margins[k, j]) for k, m in enumerate(self.members)
                         if not np.isnan(margins[k, j])}))
        return api.CompareResponse(results=results, model_version=self._version(versions), members=versions)

    async def _guard(self, work):
        """Member failures and full queues become a 503 with Retry-After; a passed deadline a 504; bad input
        stays a 4xx."""
        retry = {"Retry-After": str(max(0, math.ceil(self.retry_after_s)))}
        try:
            return await work
        except Overloaded as exc:
            return JSONResponse({"error": f"overloaded, shed: {exc} Retry after {retry['Retry-After']} s."},
                                status_code=503, headers=retry)
        except DeadlinePassed:
            return JSONResponse({"error": f"the request's {api.TIMEOUT_HEADER} passed before it was scored; "
                                          "what was not computed was dropped"}, status_code=504)
        except MemberFailed as exc:
            logger.warning("%s", exc)
            return JSONResponse({"error": f"{exc}; retry shortly"}, status_code=503, headers=retry)
