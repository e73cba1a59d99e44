"""The ``vlm`` stage: image+text training of a LLaVA-layout vision-language model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from forge_ray.spec.base import StageSpec
from forge_ray.spec.sections import ModelSpec, OptimSpec, ResourcesSpec, TrainSpec
from forge_ray.spec.typed import opt


@dataclass(kw_only=True)
class VisionSpec:
    """The ViT encoder (trained from scratch): a preset, optionally with fields overridden."""

    preset: Literal["tiny", "small", "base"] = opt("tiny", "tiny: 32 px / 8 px patches (16 image tokens), "
                                                            "small: 64/8 (64), base: ViT-B/16 at 224 (196)")
    image_size: int | None = opt(None, "input resolution in pixels (images are resized to it)", ge=8)
    patch_size: int | None = opt(None, "patch side in pixels; image tokens = (image_size / patch_size)²", ge=2)

    def resolve(self):
        """The preset's :class:`~forge_ray.vlm.presets.VisionArch` with the overridden fields."""
        from dataclasses import replace

        from forge_ray.vlm.presets import VISION_PRESETS

        base = VISION_PRESETS[self.preset]
        return replace(base, image_size=self.image_size or base.image_size, patch_size=self.patch_size or base.patch_size)

    def check(self):
        arch = self.resolve()
        if arch.image_size % arch.patch_size:
            yield "patch_size", f"image_size={arch.image_size} is not a multiple of patch_size={arch.patch_size}", ""


@dataclass(kw_only=True)
class VLMStage(StageSpec):
    """Captioning pre-training or visual-instruction SFT of a vision-language model."""

    KIND: ClassVar[str] = "vlm"
    INPUTS: ClassVar[tuple[str, ...]] = ("tokenizer", "language_model", "init_from")
    tokenizer: str = opt(help="tokenizer run; an <image> token is added when it has none")
    language_model: str | None = opt(None, "run whose language model the VLM starts from (pretrain/sft); "
                                           "unset: a fresh `model` preset")
    init_from: str | None = opt(None, "an earlier vlm run to continue (e.g. instructions after captions)")
    model: ModelSpec = opt(default_factory=ModelSpec, help="language model when neither run is given")
    vision: VisionSpec = opt(default_factory=VisionSpec, help="vision encoder")
    phase: Literal["caption", "instruct"] = opt("caption", "caption: learn to describe images; instruct: "
                                                           "answer questions about them (chat template)")
    freeze: list[Literal["vision", "projector", "language"]] = opt([], "parts not trained in this stage")
    data: list[str] = opt(help="JSONL files of {image, text} (caption) or {image, question, answer} rows; "
                               "image paths relative to the file")
    val_fraction: float = opt(0.1, "share of images held out for validation loss", ge=0, lt=1)
    eval_vqa: str | None = opt(None, "held-out {image, question, answer} JSONL: greedy-answer accuracy at the end")
    optim: OptimSpec = opt(default_factory=OptimSpec, help="optimiser and schedule")
    train: TrainSpec = opt(default_factory=TrainSpec, help="step loop")
    resources: ResourcesSpec = opt(default_factory=ResourcesSpec, help="workers")

    def check(self):
        yield from super().check()
        if self.language_model and self.init_from:
            yield "init_from", "give either a language_model run or an earlier vlm run, not both", ""
        if not self.data:
            yield "data", "needs at least one JSONL file of image rows", ""
        from forge_ray.spec.sections import path_problems

        yield from path_problems("data", self.data)
        if self.eval_vqa:
            for _, message, hint in path_problems("path", [self.eval_vqa]):
                yield "eval_vqa", message, hint
        if len(set(self.freeze)) == 3:
            yield "freeze", "freezes every part: nothing would train", "leave at least one part out"
        tokens = self.vision.resolve().n_image_tokens
        if self.train.seq_len < tokens + 4:
            yield "train.seq_len", f"{self.train.seq_len} cannot hold {tokens} image tokens and any text", \
                f"at least {tokens + 4}; image tokens are never truncated"
