"""How one request is cut into member calls: each member gets the items routed to it in calls of at most its
batch of units (a pair, or one response of a group), a group larger than a call split over calls with its
prompt sent with each part, so `@serve.batch` can fill batches by units, not by requests."""

from __future__ import annotations


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
