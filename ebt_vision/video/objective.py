"""Next-frame prediction with the video EBT: training through the descent, and autoregressive rollouts.

Training descends every next frame of a clip in parallel, from a stated start (the last real frame, noise, or the
model's own one-pass guess, whose loss is then trained beside the descent's), and scores every step's candidates
against the real next frames (SmoothL1 or MSE, as the image workload). Replay and Langevin noise come from
``cfg.descent`` through ``EnergyObjective``. A rollout predicts one frame at a time with the same
``minimize_energy``, optionally with more steps than trained, best-of-N by lowest energy per frame, and energy-based
stopping; it returns the per-frame energies and per-patch energy maps with the predictions.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.descent import lowest_energy
from ..core.hub import HubModel, as_config
from ..core.inference import Thinking
from ..core.objective import EnergyObjective, StepOutput, clamp_unit_range
from .config import VideoConfig
from .model import VideoEBT, VideoMemory
from .rollout import Reference, Rollout, check_context


class VideoObjective(EnergyObjective, HubModel):
    """The video EBT with its learned step size. ``forward(clips (B, L, C, H, W)) -> StepOutput`` trains on
    predicting frames 2..L (or the last ``prediction.train_frames``), each from the real frames before it;
    ``rollout`` predicts future frames."""

    def __init__(self, cfg: VideoConfig) -> None:
        cfg = as_config(cfg)
        model = VideoEBT(cfg.ebt_model(), guess=cfg.prediction.start == "guess", reference=Reference.of(cfg.prediction))
        super().__init__(model, cfg)

    @property
    def guesses(self) -> bool:
        """Whether the descent starts from the model's own one-pass guess (the model was built with its readout)."""
        return self.model.guess_head is not None

    def projection(self):
        return clamp_unit_range

    def encode(self, context: Tensor | VideoMemory) -> VideoMemory | Tensor:
        """The real frames' memory, once per descent (not with checkpointed steps: a reentrant checkpoint cannot
        follow tensors hidden in the memory, so those steps re-encode the frames themselves); a memory passes
        through."""
        if isinstance(context, VideoMemory) or self.cfg.descent.checkpoint_steps:
            return context
        return self.model.encode_context(context)

    def starts(
        self,
        context: Tensor,
        count: int,
        generator: torch.Generator | None = None,
        memory: VideoMemory | None = None,
    ) -> Tensor:
        """(B, T, C, H, W) -> (B, K, C, H, W): where the descent of the last ``count`` next frames starts
        (``prediction.start``: each one's last real frame, Gaussian noise, or the model's guess, read off the
        context's ``memory`` when it is at hand, else encoded here)."""
        last = context[:, context.shape[1] - count :]
        if self.guesses:
            return self.model.guess_frames(self.model.encode_context(context) if memory is None else memory, last)
        if self.cfg.prediction.start == "last-frame":  # or its extrapolation (prediction.extrapolate)
            return self.model.reference(context)[:, context.shape[1] - count :].clone()
        shape = (context.shape[0], count, *context.shape[2:])
        return torch.randn(shape, generator=generator).to(context)

    def forward(self, clips: Tensor) -> StepOutput:
        count = self.cfg.prediction.train_frames or clips.shape[1] - 1
        context, target = clips[:, :-1], clips[:, -count:]  # frame t + 1 is predicted from the real frames 1..t
        if not self.guesses:
            out, rows = self.energy_step(context, self.starts(context, count), target)
            if rows is not None:
                copy_last = rows.context[:, -rows.target.shape[1] :].float()
                out.metrics["mse_copy_last"] = F.mse_loss(copy_last, rows.target)  # the reference
            return out
        # encode once: the guess and every descent step read the same memory (and its graph)
        memory = self.model.encode_context(context)
        guess = self.starts(context, count, memory=memory)
        out, _ = self.energy_step(context if self.cfg.descent.checkpoint_steps else memory, guess, target)
        guess_loss = self.loss(guess, target)
        loss = out.loss + guess_loss
        metrics = {**out.metrics, "loss": loss.detach(), "loss_guess": guess_loss.detach()}
        metrics["mse_guess"] = F.mse_loss(guess.detach().float(), target)
        metrics["mse_copy_last"] = F.mse_loss(context[:, -count:].float(), target)  # the reference
        return StepOutput(loss, metrics)

    def _next_frame(
        self, frames: Tensor, thinking: Thinking, generator: torch.Generator, record_steps: bool
    ) -> tuple[Tensor, int, int, Tensor | None]:
        """(B, t, C, H, W) -> (the next frame (B, 1, C, H, W), forward and backward passes per clip, steps)."""
        batch, best_of = frames.shape[0], thinking.n_candidates
        context = frames.repeat(best_of, 1, 1, 1, 1)  # (N B, t, C, H, W): start n of clip b at row n B + b
        memory = self.model.encode_context(frames).repeat(best_of)  # the real stream, once for every step
        start = self.starts(context, 1, generator, memory=memory)
        if best_of > 1 and self.cfg.prediction.start != "noise":
            jitter = torch.randn(start.shape, generator=generator).to(start) * thinking.start_noise
            start = start + torch.cat([torch.zeros_like(jitter[:batch]), jitter[batch:]])
        trajectory = self.infer(memory, start, thinking)
        candidates = torch.stack(trajectory.candidates)  # (S + 1, N B, 1, C, H, W)
        if best_of > 1:
            energies = trajectory.position_energies[-1].reshape(best_of, batch, 1)
            candidates = candidates.reshape(len(candidates), best_of, batch, *candidates.shape[2:])
            candidates = torch.stack([lowest_energy(c, energies) for c in candidates])  # (S + 1, B, 1, C, H, W)
        steps = candidates[:, :, 0].transpose(0, 1).clamp(-1, 1) if record_steps else None  # (B, S + 1, C, H, W)
        passes = (best_of * trajectory.forward_passes, best_of * trajectory.backward_passes)
        return candidates[-1].clamp(-1, 1), *passes, steps

    @torch.no_grad()
    def rollout(
        self,
        context: Tensor,
        horizon: int,
        thinking: Thinking = Thinking(),
        seed: int = 0,
        energy_maps: bool = True,
        record_steps: bool = False,
    ) -> Rollout:
        """(B, T, C, H, W) real frames in [-1, 1] -> ``horizon`` predicted frames, autoregressively.

        Each frame is found by a descent with ``thinking``'s options (default: the trained steps at the learned step
        size); with best-of-N the first start is the configured one and the others are perturbed by Gaussian noise of
        ``thinking.start_noise`` (default ``prediction.start_noise``), the final energy being evaluated only then.
        Passes are counted per predicted frame of one clip. ``energy_maps``: the per-frame energies and per-patch maps
        of the chosen frames (one uncounted forward pass per frame); ``record_steps``: every descent step's candidate
        of the chosen start.
        """
        check_context(context, horizon, self.cfg.model.channels)
        noise = self.cfg.prediction.start_noise if thinking.start_noise is None else thinking.start_noise
        thinking = replace(thinking, start_noise=noise, final_energy=thinking.n_candidates > 1)
        thinking.check(self.cfg.descent.num_steps)
        frames = context.to(next(self.parameters()).device)
        generator = torch.Generator().manual_seed(seed)
        predictions, maps, recorded, passes = [], [], [], (0, 0)
        for _ in range(horizon):
            frame, forward, backward, trace = self._next_frame(frames, thinking, generator, record_steps)
            if energy_maps:
                maps.append(self.model.patch_energies(frames, frame)[:, 0])  # (B, H/p, W/p)
            if trace is not None:
                recorded.append(trace)
            predictions.append(frame[:, 0])
            frames = torch.cat([frames, frame], dim=1)
            passes = (forward, backward)
        energy_map = torch.stack(maps, dim=1) if maps else None  # (B, horizon, H/p, W/p)
        return Rollout(
            predictions=torch.stack(predictions, dim=1),
            forward_passes=passes[0],
            backward_passes=passes[1],
            energies=energy_map.sum(dim=(2, 3)) if energy_map is not None else None,
            energy_maps=energy_map,
            steps=torch.stack(recorded, dim=1) if recorded else None,
        )
