"""The HTTP ingress: one FastAPI app (`/v1/score`, `/v1/compare`, `/v1/models`, `/healthz`, and the peers'
protocols, serve/protocols.py) as the `Ingress` Serve deployment composing one `RewardMember` per member.

A request is checked (serve/api.py), its items routed to members by modality and cut into member calls
(serve/calls.py), fanned out through `DeploymentHandle`s, and the members' scores aggregated with the
ensemble's method (ensemble.py). A full member queue sheds the request (503 + Retry-After), a passed
`X-Request-Timeout` answers 504 (serve/middleware.py), a failed member 503; bad input is a 4xx naming
its field, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve

from mrm_ray.config import METHODS, Limits, to_dict, validate
from mrm_ray.ensemble import Aggregate, aggregate, routing_mask
from mrm_ray.rewards import answer_matches, hybrid_reward, sigmoid
from mrm_ray.serve import api, middleware, protocols
from mrm_ray.serve.calls import member_calls
from mrm_ray.serve.metrics import IngressMetrics
from mrm_ray.serve.middleware import BodyLimit, RequestDeadline

logger = logging.getLogger("ray.serve")

http = FastAPI(title="mrm-ray reward ensemble",
               description="Multimodal reward-model ensemble for RL rollouts: per-member scores, an "
                           "aggregate and the members' disagreement. Images only inline (base64/data URLs).")


@http.exception_handler(api.BadInput)
async def _bad_input(request: Request, exc: api.BadInput) -> JSONResponse:
    return JSONResponse({"error": str(exc), "field": exc.field}, status_code=exc.status)


def invalid_body(errors: list[dict]) -> dict:
    """A 422's body for pydantic's errors, naming the first bad field as `items[0].response`."""
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
    return {"error": message, "field": where(errors[0]) if errors else "body",
            "detail": json.loads(json.dumps(errors, default=str))}


@http.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(invalid_body(exc.errors()), status_code=422)


http.add_middleware(BodyLimit)
http.add_middleware(RequestDeadline)


class MemberFailed(RuntimeError):
    pass


class Overloaded(RuntimeError):
    """A member's queue is full: the request is shed (503 + Retry-After), not queued."""


class DeadlinePassed(RuntimeError):
    """The request's X-Request-Timeout ran out before its batch ran: dropped, not computed (504)."""


def _answer(out) -> dict:
    """A route's return (a response model or a JSONResponse) as the handle entry's answer."""
    if isinstance(out, JSONResponse):
        answer = {"status": out.status_code, "body": json.loads(out.body)}
        if "retry-after" in out.headers:
            answer["retry_after"] = float(out.headers["retry-after"])
        return answer
    return {"status": 200, "body": out if isinstance(out, dict) else out.model_dump(mode="json")}


@serve.deployment(name="Ingress")
@serve.ingress(http)
class Ingress:
    def __init__(self, spec: dict[str, Any], members: dict[str, Any]) -> None:
        self.method = spec["method"]
        self.uncertainty_coef = spec["uncertainty_coef"]
        self.members = spec["members"]
        self.handles = members
        self.limits = validate(Limits, spec["limits"])
        self.weights = np.array([m["weight"] for m in self.members], dtype=np.float64)
        self.retry_after_s = spec.get("retry_after_s", 1.0)
        self._token = spec.get("auth_token") or os.environ.get(spec.get("auth_token_env") or "", "") or None
        # Serve runs a frozen copy of `http` and pickles this class by value: state shared with
        # the middleware goes through a module both import by reference
        middleware.set_max_request_bytes(self.limits.max_request_bytes)
        self.metrics = IngressMetrics()
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
            left = middleware.time_left()
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

    async def _fan_out(self, method: str, inputs: list[dict], what: str) -> tuple[np.ndarray, list, dict, list]:
        """Member values per unit (NaN where not routed or not scored): per pair (chosen, rejected) for `compare`,
        per response of each group in order for `score`; each member's stats, versions, and per unit the
        members that gave it no score with their reasons (a judge's critique that timed out). A unit no
        member scored fails the request (503), naming why."""
        has_image = [bool(x["images"] or x.get("videos")) for x in inputs]  # a video is images to route
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
        unscored: list[dict[str, str]] = [{} for _ in range(int(first[-1]))]
        for (m, units, _), reply in zip(calls, replies):
            name = self.members[m]["name"]
            for i, message in reply["errors"].items():
                j = sorted({j for j, _ in units})[int(i)]
                raise api.BadInput(f"{what}[{j}]", f"member {name}: {message}")
            flat = [v for value in reply["values"] for v in (value if method == "score" else [value])]
            at = [first[j] + k for j, k in units]
            values[m, at] = np.asarray(flat, dtype=np.float64).reshape(len(units), width)
            starts = np.cumsum([0] + [len(v) for v in reply["values"]]) if method == "score" else None
            for i, k, reason in reply.get("unscored", ()):
                unscored[at[starts[i] + k] if method == "score" else at[i]][name] = reason
            stats[m] = {"score_mean": reply["score_mean"], "score_std": reply["score_std"]}
            versions[name] = reply["version"]
        for m, member in enumerate(self.members):  # members that scored nothing here keep neutral stats
            stats[m] = stats[m] or {"score_mean": 0.0, "score_std": 1.0}
        values[np.isnan(values).any(axis=2)] = np.nan  # a pair a member scored one side of: not its to compare
        for u in np.flatnonzero(np.isnan(values).any(axis=2).all(axis=0)):
            j = int(np.searchsorted(first, u, side="right") - 1)
            raise MemberFailed(f"no member scored {what}[{j}]: " + "; ".join(
                f"{name}: {reason}" for name, reason in unscored[u].items()))
        return values, stats, versions, unscored

    def _aggregation(self, request: api.Aggregation) -> tuple[str, float]:
        """(method, uncertainty_coef): the request's where it asks, else the ensemble's."""
        method = request.method or self.method
        if method.endswith("_weighted") and not (self.weights > 0).any():
            raise api.BadInput("method", f"{method} needs member weights and every weight is 0 here; fit them "
                                         "with `mrm-ray ensemble fit` or ask for another method")
        return method, self.uncertainty_coef if request.uncertainty_coef is None else request.uncertainty_coef

    def _aggregate(self, scores: np.ndarray, stats: list[dict], how: tuple[str, float]) -> Aggregate:
        return aggregate(scores, method=how[0], uncertainty_coef=how[1], weights=self.weights,
                         means=[s["score_mean"] for s in stats], stds=[s["score_std"] for s in stats])

    def _version(self, versions: dict[str, str]) -> str:
        key = json.dumps({"method": self.method, "weights": self.weights.tolist(), "members": versions},
                         sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    async def _score(self, request: api.ScoreRequest) -> api.ScoreResponse:
        how = self._aggregation(request)
        items = await asyncio.to_thread(api.prepare_items, request, self.limits)
        values, stats, versions, unscored = await self._fan_out("score", items, "items")
        scores = values[..., 0]
        agg = self._aggregate(scores, stats, how)
        self.metrics.disagreements(agg.std.tolist())
        results = []
        units = [(item, text) for item in request.items for text in item.texts()]  # one result per response
        for j, (item, text) in enumerate(units):
            model_reward = float(agg.reward[j])
            matched, reward = None, model_reward
            if request.reward == "hybrid":
                matched = answer_matches(text, item.reference)
                reward = hybrid_reward(text, item.reference, model_reward)
            results.append(api.ItemScore(
                reward=reward, model_reward=model_reward, std=float(agg.std[j]), method=how[0],
                matched_reference=matched, unscored=unscored[j],
                scores={m["name"]: float(scores[k, j]) for k, m in enumerate(self.members) if not np.isnan(scores[k, j])}))
        return api.ScoreResponse(results=results, model_version=self._version(versions), members=versions,
                                 uncertainty_coef=how[1])

    # ------------------------------------------------------------- the Ray-native entry
    async def call(self, route: str, body: dict | None = None, timeout_s: float | None = None,
                   authorization: str | None = None) -> dict:
        """What a `DeploymentHandle` calls (serve/handle_client.py), no HTTP: the `score`, `compare` or `models`
        route with the same checks, limits, aggregation, shedding and deadline as over HTTP, answered as
        `{"status", "body", "retry_after"}` (the HTTP status and JSON body it would have sent)."""
        from pydantic import ValidationError

        if denied := self._authorize(authorization):
            return _answer(denied)
        if route == "models":
            return _answer(await self.models(authorization))
        if route not in ("score", "compare"):
            return {"status": 404, "body": {"error": f"no route {route!r}: score, compare or models",
                                            "field": "route"}}
        deadline = middleware.set_deadline(timeout_s) if timeout_s is not None else None
        try:
            if route == "score":
                request = api.ScoreRequest.model_validate(body)
                out = await self._guard(self._score(request), "score", api.count_responses(request.items))
            else:
                request = api.CompareRequest.model_validate(body)
                out = await self._guard(self._compare(request), "compare", len(request.pairs))
        except ValidationError as exc:
            return {"status": 422, "body": invalid_body(exc.errors())}
        except api.BadInput as exc:
            return {"status": exc.status, "body": {"error": str(exc), "field": exc.field}}
        finally:
            if deadline is not None:
                middleware.reset_deadline(deadline)
        return _answer(out)

    # ---------------------------------------------------------------------------- routes
    @http.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "members": len(self.members)}

    @http.get("/v1/models")
    async def models(self, authorization: str | None = Header(None)):
        if denied := self._authorize(authorization):
            return denied
        return await self._guard(self._models(), "models")

    async def _models(self) -> dict:
        infos = await self._gather([self.handles[m["name"]].info.remote() for m in self.members])
        members = [{**info, "weight": m["weight"], "modalities": m["modalities"]}
                   for m, info in zip(self.members, infos)]
        return {"method": self.method, "uncertainty_coef": self.uncertainty_coef,
                "model_version": self._version({i["name"]: i.get("version") for i in infos}),
                "members": members, "limits": to_dict(self.limits)}

    @http.post("/v1/score", response_model=api.ScoreResponse)
    async def score(self, request: api.ScoreRequest, authorization: str | None = Header(None)):
        if denied := self._authorize(authorization):
            return denied
        return await self._guard(self._score(request), "score", api.count_responses(request.items))

    @http.post("/v1/compare", response_model=api.CompareResponse)
    async def compare(self, request: api.CompareRequest, authorization: str | None = Header(None)):
        if denied := self._authorize(authorization):
            return denied
        return await self._guard(self._compare(request), "compare", len(request.pairs))

    @http.post("/get_reward", response_model=protocols.OpenRLHFResponse)
    async def get_reward(self, request: protocols.OpenRLHFRequest, reward: Literal["model", "hybrid"] = "model",
                         method: str | None = None, uncertainty_coef: float | None = None,
                         authorization: str | None = Header(None)):
        """OpenRLHF's remote reward protocol; `?reward=hybrid` uses `labels` as reference answers, `?method=uwo`
        (and `&uncertainty_coef=`) another aggregation than the ensemble's."""
        if denied := self._authorize(authorization):
            return denied
        # checked here, not by annotation: Serve runs a pickled copy of this class, whose annotations cannot name
        # module constants
        if method is not None and method not in METHODS:
            raise api.BadInput("query.method", f"must be one of {', '.join(METHODS)}, got {method!r}")
        if uncertainty_coef is not None and not (math.isfinite(uncertainty_coef) and uncertainty_coef >= 0):
            raise api.BadInput("query.uncertainty_coef", f"must be a finite number >= 0, got {uncertainty_coef}")
        items = protocols.openrlhf_items(request).items
        scored = await self._guard(self._score(api.ScoreRequest(
            items=items, reward=reward, method=method, uncertainty_coef=uncertainty_coef)), "get_reward", api.count_responses(items))
        if isinstance(scored, JSONResponse):
            return scored
        return protocols.openrlhf_response(scored, [m["name"] for m in self.members])

    # vLLM's pooling routes (with the /v1 spellings): a client written for a vLLM reward server, veRL's
    # discriminative-RM client among them, works unchanged; one label, the ensemble's reward
    @http.post("/classify")
    @http.post("/v1/classify")
    async def classify(self, request: protocols.PoolingRequest, authorization: str | None = Header(None)):
        if denied := self._authorize(authorization):
            return denied
        return await self._guard(self._pooled(request, "classify"), "classify")

    @http.post("/pooling")
    @http.post("/v1/pooling")
    async def pooling(self, request: protocols.PoolingRequest, authorization: str | None = Header(None)):
        if denied := self._authorize(authorization):
            return denied
        return await self._guard(self._pooled(request, "pooling"), "pooling")

    async def _pooled(self, request: protocols.PoolingRequest, route: str) -> dict:
        return protocols.pooling_response(await self._score(protocols.pooling_items(request)), request, route)

    async def _compare(self, request: api.CompareRequest) -> api.CompareResponse:
        how = self._aggregation(request)
        pairs = await asyncio.to_thread(api.prepare_pairs, request, self.limits)
        values, stats, versions, unscored = await self._fan_out("compare", pairs, "pairs")
        chosen = self._aggregate(values[..., 0], stats, how)
        rejected = self._aggregate(values[..., 1], stats, how)
        margins = values[..., 0] - values[..., 1]
        spread = self._aggregate(margins, [{"score_mean": 0.0, "score_std": s["score_std"]} for s in stats], how)
        results = []
        for j in range(len(pairs)):
            margin = float(chosen.reward[j] - rejected.reward[j])
            results.append(api.PairScore(
                prob_chosen=sigmoid(margin), margin=margin, std=float(spread.std[j]), method=how[0], unscored=unscored[j],
                margins={m["name"]: float(margins[k, j]) for k, m in enumerate(self.members)
                         if not np.isnan(margins[k, j])}))
        return api.CompareResponse(results=results, model_version=self._version(versions), members=versions,
                                   uncertainty_coef=how[1])

    async def _guard(self, work, route: str, items: int = 0):
        """Member failures and full queues become a 503 with Retry-After; a passed deadline a 504; bad input
        stays a 4xx. Every outcome is counted (serve/metrics.py)."""
        retry = {"Retry-After": str(max(0, math.ceil(self.retry_after_s)))}
        try:
            out = await work
        except Overloaded as exc:
            self.metrics.answered(route, 503, items, shed=True)
            return JSONResponse({"error": f"overloaded, shed: {exc} Retry after {retry['Retry-After']} s."},
                                status_code=503, headers=retry)
        except DeadlinePassed:
            self.metrics.answered(route, 504, items)
            return JSONResponse({"error": f"the request's {middleware.TIMEOUT_HEADER} passed before it was scored; "
                                          "what was not computed was dropped"}, status_code=504)
        except MemberFailed as exc:
            self.metrics.answered(route, 503, items)
            logger.warning("%s", exc)
            return JSONResponse({"error": f"{exc}; retry shortly"}, status_code=503, headers=retry)
        except api.BadInput as exc:
            self.metrics.answered(route, exc.status, items)
            raise
        self.metrics.answered(route, 200, items)
        return out
