"""The packed forward's exactness check, shared by the every-family and the video-route tests."""

import torch

from mrm_ray.model.packing import collate_groups, collate_sequences


def packed_equals_alone(model, encoder, groups, seed):
    """Packs `groups` (several per row) and checks rewards and every parameter's gradient against one padded row
    per response; returns (the packed batch, its rewards, the reference's rewards, its gradients)."""
    reference = collate_sequences([{**{k: v for k, v in g.items() if k != "responses"}, "response_ids": r}
                                   for g in groups for r in g["responses"]], pad_token_id=encoder.pad_token_id)
    weights = torch.randn(sum(len(g["responses"]) for g in groups), generator=torch.Generator().manual_seed(seed))

    def run(batch):
        model.zero_grad(set_to_none=True)
        rewards = model(**batch)
        (rewards * weights).sum().backward()
        return rewards.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    want, want_grads = run(reference)
    batch = collate_groups(groups, pad_token_id=encoder.pad_token_id, row_tokens=10_000,
                           share_prompt=model.shares_prompt)
    got, got_grads = run(batch)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert got_grads.keys() == want_grads.keys()
    for key in want_grads:
        torch.testing.assert_close(got_grads[key], want_grads[key], atol=1e-4, rtol=1e-3, msg=key)
    model.zero_grad(set_to_none=True)
    return batch, got, want, got_grads
