"""In-process scoring helpers: encode, batch, forward, with a progress bar.

Ray Data batch scoring (evaluation) and Serve (serving) call the same model methods;
this is the single-process path used by the CLI demo and tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from mrm_ray.model.inputs import PairEncoder
from mrm_ray.model.packing import collate_packed, collate_sequences, collate_two_sequence
from mrm_ray.model.reward_model import RewardModel


@torch.no_grad()
def score_pairs(model: RewardModel, encoder: PairEncoder, rows: Iterable[dict], *, batch_size: int = 8,
                packed: bool = True, progress: bool = False) -> list[tuple[float, float]]:
    """(chosen, rejected) reward per canonical pair row, in order."""
    from tqdm.auto import tqdm

    model.eval()
    features = [encoder.encode_pair(r["prompt"], r.get("images") or [], r["chosen"], r["rejected"])
                for r in tqdm(rows, desc="encode", disable=not progress)]
    collate = collate_packed if packed else collate_two_sequence
    out: list[tuple[float, float]] = []
    for start in tqdm(range(0, len(features), batch_size), desc="score", disable=not progress):
        batch = collate(features[start:start + batch_size], pad_token_id=encoder.pad_token_id)
        chosen, rejected = model.forward_pairs(batch)
        out += list(zip(chosen.tolist(), rejected.tolist()))
    return out


@torch.no_grad()
def score_items(model: RewardModel, encoder: PairEncoder, items: Sequence[dict], *,
                batch_size: int = 8) -> list[float]:
    """Reward per `{prompt, images?, response}` item, in order."""
    model.eval()
    features = [encoder.encode_item(it["prompt"], it.get("images") or [], it["response"]) for it in items]
    out: list[float] = []
    for start in range(0, len(features), batch_size):
        batch = collate_sequences(features[start:start + batch_size], pad_token_id=encoder.pad_token_id)
        out += model(**batch).tolist()
    return out
