"""The Transformer++ baseline: the text EBT's trunk (same blocks, width, depth, vocabulary) as an ordinary causal
language model, trained with next-token cross-entropy on the same token windows.

Sizes match by construction: both models hold the token embedding and the same blocks; the EBT adds an energy head
of D weights, the baseline a final RMSNorm of D weights and reads its logits through the tied embedding (as GPT-2
does), so the counts are equal (``tests/test_text.py`` checks them within 2%).
"""

from __future__ import annotations

import torch.nn.functional as F
from timm.layers import RmsNorm
from torch import Tensor, nn

from ..core.hub import HubModel, as_config
from ..core.objective import DirectObjective, StepOutput
from .config import TextConfig, TextModelConfig, swiglu_hidden
from .data import TextBatch
from .layers import Block, Rotary, causal_stream, init_weights
from .model import check_tokens
from .objective import token_cross_entropy


class TransformerPlusPlus(nn.Module):
    """Causal Transformer++ language model: (B, L) token ids -> (B, L, V) next-token logits."""

    def __init__(self, cfg: TextModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.rotary = Rotary(cfg.width // cfg.heads)
        # one forward pass needs no double backward: PyTorch's fused attention kernels, forward and backward
        attention = "fused" if cfg.attention == "auto" else cfg.attention
        hidden = swiglu_hidden(cfg)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, hidden, attention) for _ in range(cfg.depth))
        self.final_norm = RmsNorm(cfg.width)
        init_weights(self)

    def features(self, context: Tensor, depth: int | None = None) -> Tensor:
        """(B, L) -> (B, L, D) after ``depth`` blocks (all by default), for probing."""
        check_tokens(context, self.cfg.vocab_size, self.cfg.context_length)
        return causal_stream(self.embed(context), self.rotary, self.blocks, depth)[0]

    def forward(self, context: Tensor) -> Tensor:
        """(B, L) -> (B, L, V): logits for token t + 1 at every position t, through the tied embedding."""
        return F.linear(self.final_norm(self.features(context)), self.embed.weight)


class TransformerPlusPlusObjective(DirectObjective, HubModel):
    """Next-token cross-entropy on the same ``TextBatch`` windows as the EBT; trains in the same loop."""

    def __init__(self, cfg: TextConfig) -> None:
        cfg = as_config(cfg)
        super().__init__(TransformerPlusPlus(cfg.model), cfg)

    def forward(self, batch: TextBatch) -> StepOutput:
        loss = token_cross_entropy(self.model(batch.context), batch.targets).mean()
        return StepOutput(loss, {"loss": loss.detach(), "perplexity_last": loss.detach().exp()})
