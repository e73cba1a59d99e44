"""What every Ray Train worker receives: the typed spec and the inputs the driver resolved
(files, directories, token ids, the architecture), built once by :func:`train_job`.

One frozen value instead of a hand-built dict: the worker reads ``job.spec.train.max_steps``
(a typo is an AttributeError at once, not a ``KeyError`` after minutes of start-up), and the
pre-training, SFT, DPO, reward-model and VLM stages hand over the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forge_ray.faults import FaultPlan
    from forge_ray.models.registry import Arch
    from forge_ray.runner import Context
    from forge_ray.spec.stages import LoraSpec
    from forge_ray.vlm.presets import VisionArch


@dataclass(frozen=True)
class TokenIds:
    """The tokenizer's size and special ids, as a model config wants them."""

    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None

    @classmethod
    def of(cls, tokenizer) -> TokenIds:
        return cls(vocab_size=len(tokenizer), bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id,
                   pad_id=tokenizer.pad_token_id)

    @classmethod
    def read(cls, tokenizer_dir: str | Path) -> TokenIds:
        """The same figures read from a saved fast tokenizer's files with ``tokenizers`` alone:
        the driver then need not import transformers (seconds of every start) to learn them.
        A directory without ``tokenizer.json`` (a slow tokenizer) is loaded the long way."""
        import json

        d = Path(tokenizer_dir)
        if not (d / "tokenizer.json").exists():
            from transformers import AutoTokenizer

            return cls.of(AutoTokenizer.from_pretrained(d))
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        named: dict = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the config wins, as in transformers
            if (d / name).exists():
                named.update({k: v for k, v in json.loads((d / name).read_text()).items() if v is not None})

        def token_id(key: str) -> int | None:
            value = named.get(key)
            content = value.get("content") if isinstance(value, dict) else value
            return tok.token_to_id(content) if isinstance(content, str) else None

        return cls(vocab_size=tok.get_vocab_size(with_added_tokens=True), bos_id=token_id("bos_token"),
                   eos_id=token_id("eos_token"), pad_id=token_id("pad_token"))

    def as_kwargs(self) -> dict[str, int | None]:
        return {"vocab_size": self.vocab_size, "bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id}


@dataclass(frozen=True)
class VisionInputs:
    """A vision-language stage's extra inputs: the vision tower, the ``<image>`` id, the parts
    kept frozen, and an earlier VLM run to continue."""

    vision: VisionArch
    image_token_id: int
    freeze: tuple[str, ...] = ()
    init_vlm_dir: str | None = None


@dataclass(frozen=True)
class TrainJob:
    spec: Any  # the stage's typed spec (PretrainStage, SftStage, DpoStage, RewardModelStage, VLMStage)
    storage: str  # the storage root the workers write the run to
    train_files: list[str]
    val_files: list[str]
    tokenizer_dir: str
    token_ids: TokenIds
    arch: Arch  # the language model's shape (of the base run, when there is one)
    flops_per_token: float
    init_model_dir: str | None = None  # the base model (fine-tuning, continued pre-training)
    train_dir: str | None = None  # where the run's own checkpoints are, on shared storage
    vocab_pieces: dict[int, list[int]] | None = None  # domain tokens: each new id's old pieces
    vlm: VisionInputs | None = None
    fault: FaultPlan | None = None  # the recovery tests' planned failure (forge_ray.faults)

    @property
    def run_name(self) -> str:
        return self.spec.name

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def lora(self) -> LoraSpec | None:
        """The LoRA settings when the stage trains adapters, else None."""
        lora = getattr(self.spec, "lora", None)  # only SFT has a lora section
        return lora if lora is not None and lora.enabled else None


def storage_root(ctx: Context) -> str:
    """The root workers open the run under: the URI for object stores, the directory otherwise."""
    return ctx.storage.uri if "://" in ctx.storage.uri else ctx.storage.base
