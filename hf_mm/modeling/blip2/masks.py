"""BLIP-2's three Q-Former self-attention masks (the paper's Figure 2), over the sequence [queries; text].

| mode | queries see | text sees |
|---|---|---|
| `unimodal` (ITC)  | queries | text (no queries): the two streams never mix |
| `bidirectional` (ITM) | queries and text | queries and text |
| `causal` (ITG)    | queries | queries and the text up to itself |

Padding (text_mask 0) is never attended to. Masks are boolean, True where a position may attend, shaped
(B, 1, Q + T, Q + T) for SDPA.
"""

import torch

MODES = ("unimodal", "bidirectional", "causal")


def qformer_attention_mask(num_queries: int, text_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, T) text padding mask -> (B, 1, Q + T, Q + T) boolean attention mask for `mode`."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}.")
    batch, length = text_mask.shape
    q, size = num_queries, num_queries + length
    allowed = torch.zeros(size, size, dtype=torch.bool, device=text_mask.device)
    allowed[:q, :q] = True  # queries always see each other
    if mode == "unimodal":
        allowed[q:, q:] = True
    elif mode == "bidirectional":
        allowed[:, :] = True
    else:  # causal: text sees every query and the text up to itself; queries never see text
        allowed[q:, :q] = True
        allowed[q:, q:] = torch.ones(length, length, dtype=torch.bool, device=text_mask.device).tril()
    keys = torch.cat([torch.ones(batch, q, dtype=torch.bool, device=text_mask.device), text_mask.bool()], dim=1)
    return (allowed[None] & keys[:, None, :])[:, None]  # (B, 1, Q + T, Q + T)


__all__ = ["MODES", "qformer_attention_mask"]
