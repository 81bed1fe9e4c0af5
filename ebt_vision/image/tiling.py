"""Energy of a photo of any size from a model trained on small crops.

The image EBT runs at any multiple of its patch size, but a model trained on 32-pixel crops has never seen the
positions and attention spans of a 512-pixel grid. ``TiledEnergy`` keeps every forward pass at the training size:
the photo is reflect-padded and cut into half-overlapping tiles, and its energy is the sum of the tile energies
divided by how many tiles cover each pixel (the same count everywhere). The padding is context only (detached), so
every pixel's gradient is the average of the gradients of the tiles that cover it: the step size keeps the scale
it was trained at. The descent core is unchanged; it just receives this energy function.

``overlap=1`` cuts tiles side by side instead: 4x fewer forward passes for 0.1-0.2 dB less on the validation photos
(measured with the shipped EBT at sigma 15-50), which is what the interactive app uses; evaluations use 2.
``overlap=4`` puts tiles a quarter of a tile apart (each pixel in 16): 4x the FLOPs of 2 per pass
(``ebt-vision eval --tile-overlap 4``; what it buys: docs/results/thinking.md).

``views`` (``SymmetricEnergy``, and ``tiled_map`` for predictors) averages over flipped and transposed copies of the
photo: the energy becomes the mean of the energies of 2, 4 or all 8 mirror images of (context, candidate), each
tiled as above, so every descent step follows the gradient all of them agree on. The models trained on crops
flipped and turned by multiples of 90 degrees, so every view is one they know; a pass costs ``views`` times the FLOPs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..core.defaults import MIRROR_VIEWS
from ..core.errors import InputError
from .model import ImageEBT, check_image_pair


def check_views(views: int) -> None:
    if views not in MIRROR_VIEWS:
        raise ValueError(f"views must be one of {MIRROR_VIEWS} (mirror images averaged), got {views}")


def view(images: Tensor, k: int) -> Tensor:
    """The k-th (0-7) mirror image of (..., H, W): bit 1 mirrors left-right, bit 2 upside down, bit 4 transposes
    (as is, mirrored, upside down, both; then each of those transposed). The first 1, 2, 4 or 8 of them form a group,
    so averaging over them is symmetric."""
    if k & 1:
        images = images.flip(-1)
    if k & 2:
        images = images.flip(-2)
    return images.transpose(-1, -2) if k & 4 else images


def unview(images: Tensor, k: int) -> Tensor:
    """The inverse of ``view(., k)``: maps images (or per-patch maps) of the k-th view back onto the photo."""
    if k & 4:
        images = images.transpose(-1, -2)
    if k & 2:
        images = images.flip(-2)
    return images.flip(-1) if k & 1 else images


def tile_layout(size: int, tile: int, overlap: int = 2) -> tuple[int, int, int, int]:
    """One dimension: (tile, stride, pad_before, pad_after); every pixel is covered by ``overlap`` tiles (stride
    tile / overlap). Dimensions no larger than a tile are not cut."""
    if size <= tile:
        return size, size, 0, 0
    stride = tile // overlap
    margin = tile - stride  # padding before, so the first pixels are covered as often as the rest
    return tile, stride, margin, margin + (-(size + 2 * margin) % stride)


def cut_tiles(images: Tensor, th: int, sh: int, tw: int, sw: int) -> Tensor:
    """(B, C, H, W) padded -> (B * nh * nw, C, th, tw): tiles of size th x tw at strides sh, sw, image-major."""
    tiles = images.unfold(2, th, sh).unfold(3, tw, sw)  # (B, C, nh, nw, th, tw)
    return tiles.permute(0, 2, 3, 1, 4, 5).reshape(-1, images.shape[1], th, tw)


def tiled_map(
    fn: Callable[[Tensor], Tensor], images: Tensor, tile: int, chunk: int = 512, overlap: int = 2, views: int = 1
) -> Tensor:
    """Apply an image-to-image ``fn`` on overlapping tiles: (B, C, H, W) -> (B, C, H, W), overlaps averaged.

    The same layout as ``TiledEnergy`` (reflect padding, stride tile/2), for predictors such as the DiT baseline, so
    both model families see only training-sized inputs. ``views`` > 1: the average of ``fn``'s output on that many
    mirror images of the photo (``view``), each mapped back, as ``SymmetricEnergy`` averages the EBT's energy.
    """
    check_views(views)
    if views > 1:
        outputs = [unview(tiled_map(fn, view(images, k), tile, chunk, overlap), k) for k in range(views)]
        return torch.stack(outputs).mean(0)
    (th, sh, top, bottom), (tw, sw, left, right) = (
        tile_layout(images.shape[2], tile, overlap),
        tile_layout(images.shape[3], tile, overlap),
    )
    pad = (left, right, top, bottom)
    padded = F.pad(images, pad, mode="reflect") if any(pad) else images
    batch, channels = images.shape[:2]
    tiles = cut_tiles(padded, th, sh, tw, sw)
    nh, nw = (padded.shape[2] - th) // sh + 1, (padded.shape[3] - tw) // sw + 1
    outputs = torch.cat([fn(tiles[i : i + chunk]) for i in range(0, tiles.shape[0], chunk)])
    columns = outputs.reshape(batch, nh * nw, channels * th * tw).transpose(1, 2)
    size = padded.shape[2:]
    summed = F.fold(columns, size, (th, tw), stride=(sh, sw))
    counts = F.fold(torch.ones_like(columns[:1]), size, (th, tw), stride=(sh, sw))
    return (summed / counts)[..., top : top + images.shape[2], left : left + images.shape[3]]


class TiledEnergy:
    """``(B, C, H, W), (B, C, H, W) -> (B,)``; ``patch_energy_map`` gives (B, H/p, W/p).

    With ``record_maps`` every call also keeps the per-patch energy map of the candidate it evaluated (detached) in
    ``maps``: a descent then yields the energy map of each candidate it visited at no extra forward pass.
    """

    def __init__(
        self,
        model: ImageEBT,
        tile: int,
        chunk: int = 512,
        sigma: Tensor | None = None,
        record_maps: bool = False,
        overlap: int = 2,
    ) -> None:
        p = model.cfg.patch_size
        if tile % (2 * p):
            raise ValueError(f"tile {tile} must be a multiple of twice the patch size ({2 * p})")
        if overlap not in (1, 2, 4):
            raise ValueError(f"overlap must be 1 (tiles side by side), 2 (half-overlapping) or 4, got {overlap}")
        if (tile // overlap) % p:
            raise ValueError(f"overlap {overlap} puts tiles {tile // overlap}px apart: not a whole number of patches")
        self.model, self.tile, self.chunk, self.overlap = model, tile, chunk, overlap
        self.sigma = None if sigma is None else torch.as_tensor(sigma, dtype=torch.float32).reshape(-1)  # (B,)
        self.maps: list[Tensor] | None = [] if record_maps else None

    def _tiles(self, context: Tensor, candidate: Tensor):
        """Cut both images into tiles: -> (B * n, C, th, tw) x2, grid (nh, nw), layouts, coverage."""
        check_image_pair(context, candidate, self.model.cfg.channels, self.model.cfg.patch_size)
        (th, sh, top, bottom), (tw, sw, left, right) = (
            tile_layout(context.shape[2], self.tile, self.overlap),
            tile_layout(context.shape[3], self.tile, self.overlap),
        )
        pad = (left, right, top, bottom)
        padded_context = F.pad(context, pad, mode="reflect") if any(pad) else context
        padded = F.pad(candidate, pad, mode="reflect") if any(pad) else candidate
        if any(pad):  # the padding is context: only the real pixels are descended
            interior = torch.zeros_like(padded, dtype=torch.bool)
            interior[..., top : top + candidate.shape[2], left : left + candidate.shape[3]] = True
            padded = torch.where(interior, padded, padded.detach())
        grid = ((padded.shape[2] - th) // sh + 1, (padded.shape[3] - tw) // sw + 1)
        coverage = (th // sh) * (tw // sw)
        tiles = cut_tiles(padded_context, th, sh, tw, sw), cut_tiles(padded, th, sh, tw, sw)
        return *tiles, grid, (th, sh, top), (tw, sw, left), coverage

    def _tile_patch_energies(self, context_tiles: Tensor, candidate_tiles: Tensor) -> Tensor:
        """(n, C, th, tw) x2 -> (n, th/p, tw/p), in chunks; recomputed in backward to bound memory on big photos."""
        chunks = []
        sigma = None
        if self.sigma is not None:  # one sigma per image (or one for all) -> one per tile
            per_image = context_tiles.shape[0] // self.sigma.numel()
            sigma = self.sigma.to(context_tiles.device).repeat_interleave(per_image)
        for start in range(0, context_tiles.shape[0], self.chunk):
            end = start + self.chunk
            args = (context_tiles[start:end], candidate_tiles[start:end], None if sigma is None else sigma[start:end])
            if torch.is_grad_enabled() and context_tiles.shape[0] > self.chunk:
                chunks.append(checkpoint(self.model.patch_energies, *args, use_reentrant=False))
            else:
                chunks.append(self.model.patch_energies(*args))
        return torch.cat(chunks)

    def __call__(self, context: Tensor, candidate: Tensor) -> Tensor:
        context_tiles, candidate_tiles, grid, rows, cols, coverage = self._tiles(context, candidate)
        energies = self._tile_patch_energies(context_tiles, candidate_tiles)
        if self.maps is not None:
            self.maps.append(self._fold(energies.detach(), context.shape, grid, rows, cols))
        return energies.reshape(context.shape[0], -1).sum(dim=1) / coverage

    def patch_energy_map(self, context: Tensor, candidate: Tensor) -> Tensor:
        """(B, C, H, W) x2 -> (B, H/p, W/p): each patch's energy averaged over the tiles that cover it."""
        context_tiles, candidate_tiles, grid, rows, cols, _ = self._tiles(context, candidate)
        energies = self._tile_patch_energies(context_tiles, candidate_tiles)  # (B * nh * nw, th/p, tw/p)
        return self._fold(energies, context.shape, grid, rows, cols)

    def _fold(self, energies: Tensor, shape: torch.Size, grid, rows, cols) -> Tensor:
        """Tile patch energies (B * nh * nw, th/p, tw/p) -> (B, H/p, W/p), averaged where tiles overlap."""
        p = self.model.cfg.patch_size
        (nh, nw), (th, sh, top), (tw, sw, left) = grid, rows, cols
        batch = shape[0]
        columns = energies.reshape(batch, nh * nw, -1).transpose(1, 2)  # (B, th/p * tw/p, nh * nw)
        out_size = ((nh - 1) * sh // p + th // p, (nw - 1) * sw // p + tw // p)
        kernel, stride = (th // p, tw // p), (sh // p, sw // p)
        summed = F.fold(columns, out_size, kernel, stride=stride)
        counts = F.fold(torch.ones_like(columns), out_size, kernel, stride=stride)
        folded = (summed / counts)[:, 0]  # (B, Hp/p, Wp/p)
        return folded[:, top // p : top // p + shape[2] // p, left // p : left // p + shape[3] // p]


class SymmetricEnergy:
    """A tiled energy averaged over ``views`` mirror images of the photo (``view``): ``(B, C, H, W) x2 -> (B,)``.

    Its gradient with respect to the candidate is the average of each view's gradient mapped back onto the photo, so
    the descent core runs on it unchanged. With a recording ``base`` each call keeps the views' energy map, averaged
    on the photo, in ``maps``. Height and width must be whole patches (a mirrored patch grid must stay the grid).
    """

    def __init__(self, base: TiledEnergy, views: int) -> None:
        check_views(views)
        self.base, self.views, self.model = base, views, base.model
        self.maps: list[Tensor] | None = None if base.maps is None else []

    def _check(self, context: Tensor) -> None:
        p = self.model.cfg.patch_size
        if context.dim() == 4 and (context.shape[2] % p or context.shape[3] % p):
            raise InputError(
                f"averaging over mirror images needs whole {p}px patches, got {context.shape[2]}x{context.shape[3]}"
                " (crop_to_patches cuts the photo to them)"
            )

    def __call__(self, context: Tensor, candidate: Tensor) -> Tensor:
        self._check(context)
        total, maps = 0.0, []
        for k in range(self.views):
            total = total + self.base(view(context, k), view(candidate, k))
            if self.maps is not None:
                maps.append(unview(self.base.maps.pop(), k))
        if self.maps is not None:
            self.maps.append(torch.stack(maps).mean(0))
        return total / self.views

    def patch_energy_map(self, context: Tensor, candidate: Tensor) -> Tensor:
        """(B, C, H, W) x2 -> (B, H/p, W/p): the views' per-patch energy maps, mapped back and averaged."""
        self._check(context)
        maps = [unview(self.base.patch_energy_map(view(context, k), view(candidate, k)), k) for k in range(self.views)]
        return torch.stack(maps).mean(0)


def photo_energy(model: ImageEBT, tile: int, views: int = 1, **tiled) -> TiledEnergy | SymmetricEnergy:
    """The energy an image EBT descends on a photo: ``TiledEnergy(model, tile, **tiled)``, averaged over ``views``
    mirror images when more than one."""
    energy = TiledEnergy(model, tile, **tiled)
    return SymmetricEnergy(energy, views) if views > 1 else energy
