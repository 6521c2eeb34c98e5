"""The reference statement of the time-window semantics (brute force, for tests).

The scale spec and its semantics live in :mod:`recsys_cli.contract.scales`; training reads window
starts computed once per dataset by :mod:`recsys_cli.data.window_features`. :func:`window_masks`
states the semantics directly, as [B, S, L, T] booleans, so tests can check those starts against it.
"""

from __future__ import annotations

import torch

from recsys_cli.contract.scales import TimeWindowScale


def window_masks(
    scales: list[TimeWindowScale], times: torch.Tensor, valid: torch.Tensor, num_positions: int
) -> torch.Tensor:
    """Membership of each event in each scale's window, for the last ``num_positions`` anchors.

    The semantics of :mod:`recsys_cli.contract.scales` by brute force ([B, S, L, T] booleans): tests
    check the window starts that batches carry (computed once per dataset by
    :mod:`recsys_cli.data.window_features`) against it; training never builds these masks.

    times: [B, T] event times (seconds or positions), valid: [B, T] bool, T = H + L,
    num_positions: L. Returns [B, S, L, T] bool: mask[b, s, i, j] is True when event j is in
    scale s's window anchored at event H + i. Invalid anchors (padding) have an empty row.
    """
    T = times.shape[1]
    H = T - num_positions
    anchor = torch.arange(H, T, device=times.device)  # [L]
    j = torch.arange(T, device=times.device)  # [T]
    back = anchor[:, None] - j[None, :]  # [L, T] how many events before the anchor
    causal = back >= 0
    gap = times[:, H:, None] - times[:, None, :]  # [B, L, T] anchor time - event time
    member = valid[:, None, :] & valid[:, H:, None]  # [B, L, T]
    masks = []
    for scale in scales:
        m = member & causal & (back < scale.max_events)
        if scale.last is not None:
            m = m & (back < scale.last)
        if scale.seconds is not None:
            m = m & (gap <= scale.seconds)
        masks.append(m)
    return torch.stack(masks, dim=1)

