"""How a transformer's final tokens become energies: the energy parameterisations every workload shares.

An energy model runs a trunk over (context, candidate) and ends in an ``EnergyHead``: one energy per position (a
patch of an image or frame, a token of text) from that position's final token ``t`` (D values, normalised) and the
candidate's own values ``x`` there (K values: the patch's pixels, the token's logits). The kinds:

- ``linear``: ``w . t``, the original work's head. The gradient reaches ``x`` only back through the trunk (for an
  image, through the transposed patch embedding), so the model has no output layer of its own for the correction.
- ``dot``: ``<x, f(t)>`` with ``f`` a per-position output layer (D -> K, like a DiT's final layer); the explicit energy
  of Equilibrium Matching (Wang and Du, 2025) written per position.
- ``l2``: ``-|f(t)|^2 / 2``, Equilibrium Matching's other explicit energy.
- ``residual``: ``|x - f(t)|^2 / 2``: a bowl around the output layer's proposal. Its gradient is ``x - f`` plus the
  trunk's correction ``-J_f^T (x - f)``, so a step of size 1 from ``x`` lands near ``f`` and the descent converges for
  any step size in (0, 2) (``check_energy_step_size``): the answer is a minimum by construction, and the energy at
  it measures how far the candidate still is from what the model proposes.

The energy of a position is in units where a step of size ``s`` moves ``x`` by ``s * dE/dx``; a whole sample's energy
is the SUM over positions (so the step size does not depend on the number of positions).
"""

from __future__ import annotations

from torch import Tensor, nn

ENERGY_KINDS = ("linear", "dot", "l2", "residual")
# The residual bowl is exactly quadratic in x at fixed tokens: a step size above 2 overshoots and diverges.
RESIDUAL_MAX_STEP_SIZE = 2.0


def check_energy_step_size(kind: str, step_size: float) -> str | None:
    """Why ``step_size`` cannot descend an energy of ``kind`` (None when it can)."""
    if kind == "residual" and not 0 < step_size <= RESIDUAL_MAX_STEP_SIZE:
        return (
            f"model.energy=residual descends x <- x - s (x - f): descent.step_size must be in (0, "
            f"{RESIDUAL_MAX_STEP_SIZE:g}] (1 lands on the proposal), got {step_size:g}"
        )
    return None


class EnergyHead(nn.Module):
    """(B, ..., N, D) final tokens, (B, ..., N, K) candidate values -> (B, ..., N) energies (see the module doc)."""

    def __init__(self, width: int, values: int, kind: str = "linear") -> None:
        super().__init__()
        if kind not in ENERGY_KINDS:
            raise ValueError(f"energy kind must be one of {ENERGY_KINDS}, got {kind!r}")
        self.kind = kind
        # No affine in the norm (and no bias in the linear head): a candidate-independent shift of the energy gets no
        # gradient. The other kinds' biases are candidate-dependent terms (a constant field for dot, an offset of the
        # proposal for residual), so they learn.
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.out = nn.Linear(width, 1 if kind == "linear" else values, bias=kind != "linear")

    def reset_parameters(self) -> None:
        """Zero for linear, dot and residual (the trunk starts as a no-op, as in adaLN-Zero: the first residual step
        lands on 0, the first dot step does nothing); small random for l2, whose gradient -J^T f is zero to first order
        in the weights at f = 0 (a saddle it would never leave)."""
        if self.kind == "l2":
            nn.init.normal_(self.out.weight, std=0.02)
        else:
            nn.init.zeros_(self.out.weight)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the head had kinds hold the linear head's weight as ``<head>.weight``.
        if prefix + "weight" in state_dict and prefix + "out.weight" not in state_dict:
            state_dict[prefix + "out.weight"] = state_dict.pop(prefix + "weight")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, tokens: Tensor, values: Tensor) -> Tensor:
        proposal = self.out(self.norm(tokens))
        if self.kind == "linear":
            return proposal.squeeze(-1)
        proposal = proposal.to(values.dtype)
        if self.kind == "dot":
            return (values * proposal).sum(-1)
        if self.kind == "l2":
            return -0.5 * proposal.pow(2).sum(-1)
        return 0.5 * (values - proposal).pow(2).sum(-1)
