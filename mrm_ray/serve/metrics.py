"""The reward app's metrics, through Ray's own (`ray.util.metrics`), so they are on every node's Prometheus
endpoint (`ray start --metrics-export-port`, names prefixed `ray_`) beside Serve's, tagged with the app and,
for a member's figures, the member:

  mrm_requests_total{app, route, status}        requests answered, by route and HTTP status (503 = shed or a
                                                failed member, 504 = deadline passed, 4xx = bad input)
  mrm_items_total{app, route, status}           responses (or pairs) in those requests
  mrm_shed_total{app, route}                    requests shed because a member's queue was full
  mrm_disagreement{app}                         per item: the members' standard deviation (histogram)
  mrm_member_batch_items{app, member}           responses or pairs per dynamic batch (histogram)
  mrm_member_latency_seconds{app, member}       one batch's scoring time (histogram)
  mrm_member_score{app, member}                 every score the member gives, as sigmoid of its z-score
                                                (histogram; 0.5 = the member's calibration mean: Ray's
                                                histograms take positive boundaries only)

`dashboards/reward_app.json` (shipped with the package) is a Grafana dashboard over these.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
SCORE_BOUNDARIES = [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98]  # sigmoid(z)
DISAGREEMENT_BOUNDARIES = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0]


def app_name() -> str:
    """The Serve application this replica belongs to ("" outside a replica)."""
    from ray import serve

    try:
        return serve.get_replica_context().app_name
    except Exception:  # not in a replica (a unit test): untagged
        return ""


class IngressMetrics:
    def __init__(self) -> None:
        from ray.util.metrics import Counter, Histogram

        self.tags = {"app": app_name()}
        self.requests = Counter("mrm_requests_total", "Reward app requests answered, by route and HTTP status.",
                                tag_keys=("app", "route", "status"))
        self.items = Counter("mrm_items_total", "Responses (or pairs) in the reward app's requests.",
                             tag_keys=("app", "route", "status"))
        self.shed = Counter("mrm_shed_total", "Requests shed because a member's queue was full.",
                            tag_keys=("app", "route"))
        self.disagreement = Histogram("mrm_disagreement", "The members' standard deviation, per item.",
                                      boundaries=DISAGREEMENT_BOUNDARIES, tag_keys=("app",))

    def answered(self, route: str, status: int, items: int, *, shed: bool = False) -> None:
        tags = {**self.tags, "route": route, "status": str(status)}
        self.requests.inc(1, tags)
        if items:
            self.items.inc(items, tags)
        if shed:
            self.shed.inc(1, {**self.tags, "route": route})

    def disagreements(self, stds: Iterable[float]) -> None:
        for s in stds:
            if s == s:  # NaN where no member scored the item
                self.disagreement.observe(float(s), self.tags)


class MemberMetrics:
    def __init__(self, member: str) -> None:
        from ray.util.metrics import Histogram

        self.tags = {"app": app_name(), "member": member}
        keys = ("app", "member")
        self.batch_items = Histogram("mrm_member_batch_items", "Responses or pairs per dynamic batch.",
                                     boundaries=BATCH_BOUNDARIES, tag_keys=keys)
        self.latency = Histogram("mrm_member_latency_seconds", "One batch's scoring time.",
                                 boundaries=LATENCY_BOUNDARIES, tag_keys=keys)
        self.score = Histogram("mrm_member_score", "The member's scores, as sigmoid of their z-score.",
                               boundaries=SCORE_BOUNDARIES, tag_keys=keys)

    def batch(self, items: int, seconds: float, values: list, *, mean: float, std: float) -> None:
        """One batch: its size and time, and every score in it (z-normalised with the member's mean and std)."""
        self.batch_items.observe(items, self.tags)
        self.latency.observe(seconds, self.tags)
        for v in values:
            for x in (v if isinstance(v, (list, tuple)) else [v]):  # a group's list, or a pair's (chosen, rejected)
                if isinstance(x, (int, float)) and math.isfinite(x):
                    self.score.observe(1.0 / (1.0 + math.exp(-(float(x) - mean) / std)), self.tags)
