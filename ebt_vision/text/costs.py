"""What the text models cost per token, measured with ``core.flops.count_flops`` (matrix products and attention in
every pass): the EBT's context encoding, one energy evaluation and one gradient to the logits, one Transformer++
forward, and one training step of each. Counts depend on the shapes only, so zeros serve as tokens."""

from __future__ import annotations

import torch
from torch import nn

from ..core.flops import count_flops
from .baseline import TransformerPlusPlusObjective
from .data import TextBatch
from .objective import TextEBTObjective


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def pass_flops(ebt: TextEBTObjective, transformer: TransformerPlusPlusObjective, seq_len: int) -> dict[str, float]:
    """FLOPs per token of each pass over a window of ``seq_len`` tokens: ``ebt_encode`` (the real stream, once per
    descent, with the guess readout of a guess start), ``ebt_forward`` (the candidate stream against it: one energy
    evaluation), ``ebt_backward`` (the gradient to the candidate, as the descent computes it), ``ebt_readout``
    (reading the answer as next-token logits: nothing for logits, the tied embedding for an embedding candidate),
    ``transformer_forward``."""
    context = torch.zeros(1, seq_len, dtype=torch.long, device=_device(ebt))
    candidate = ebt.model.uniform((1, seq_len), _device(ebt))  # a candidate of the model's space

    def encode_pass():  # the real stream, and the guess read off it when the descent starts there
        memory = ebt.model.encode_context(context)
        return ebt.model.guess(memory) if ebt.guesses else memory

    with torch.no_grad():
        encode = count_flops(encode_pass)
        memory = ebt.model.encode_context(context)
        forward = count_flops(lambda: ebt.model(memory, candidate))
        readout = count_flops(lambda: ebt.model.logits(candidate))
        transformer_forward = count_flops(lambda: transformer.model(context.to(_device(transformer))))

    def gradient():
        moving = candidate.clone().requires_grad_(True)
        torch.autograd.grad(ebt.model(memory, moving).sum(), moving)

    backward = count_flops(gradient) - forward
    return {
        "ebt_encode": encode / seq_len,
        "ebt_readout": readout / seq_len,
        "ebt_forward": forward / seq_len,
        "ebt_backward": backward / seq_len,
        "transformer_forward": transformer_forward / seq_len,
    }


def training_step_flops(objective: nn.Module, batch_size: int, seq_len: int) -> float:
    """FLOPs per trained token of one training step (forward and backward; the EBT's descent and its second-order
    graph included) on a batch of ``batch_size`` windows."""
    was_training = objective.training
    objective.train()
    batch = TextBatch(torch.zeros(batch_size, seq_len + 1, dtype=torch.long, device=_device(objective)))
    try:
        flops = count_flops(lambda: objective(batch).loss.backward())
    finally:
        objective.zero_grad(set_to_none=True)
        objective.train(was_training)
    return flops / (batch_size * seq_len)
