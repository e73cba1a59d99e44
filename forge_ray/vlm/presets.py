"""Vision-encoder presets (no heavy imports: the spec checker reads them)."""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class VisionArch:
    image_size: int
    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int

    @property
    def n_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


VISION_PRESETS = {
    "tiny": VisionArch(image_size=32, patch_size=8, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128),
    "small": VisionArch(image_size=64, patch_size=8, hidden_size=192, num_layers=6, num_heads=3,
                        intermediate_size=768),
    "base": VisionArch(image_size=224, patch_size=16, hidden_size=768, num_layers=12, num_heads=12,
                       intermediate_size=3072),  # ViT-B/16
}
