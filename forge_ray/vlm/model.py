"""A LLaVA-layout vision-language model from ``transformers`` configs.

``LlavaForConditionalGeneration``: a SigLIP-style ViT encoder (trained from scratch here —
nothing is downloaded), a 2-layer GELU projector into the language model's width, and a
language model from our registry (Llama dense or Mixtral MoE) — either fresh from a preset
or the weights of an earlier run, whose embedding grows by the ``<image>`` token when the
tokenizer had none (new rows start at the mean embedding, the usual choice: the new token
starts out "average" instead of random and large). Parts can be frozen per stage: the
classic recipe trains the projector first (``freeze: [vision, language]`` after a vision
encoder exists), then everything.

The export is a plain HF directory (config, safetensors, tokenizer, image-processor config)
that ``LlavaForConditionalGeneration.from_pretrained`` and ``AutoProcessor`` load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from forge_ray.vlm.presets import IMAGE_TOKEN, VISION_PRESETS, VisionArch  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from forge_ray.train.job import TrainJob, VisionInputs


def llava_config(vision: VisionArch, text_config, image_token_id: int):
    from transformers import LlavaConfig, SiglipVisionConfig

    vision_config = SiglipVisionConfig(hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size,
                                       num_hidden_layers=vision.num_layers, num_attention_heads=vision.num_heads,
                                       image_size=vision.image_size, patch_size=vision.patch_size, num_channels=3,
                                       vision_use_head=False)  # LLaVA reads patch features, not a pooled vector
    return LlavaConfig(vision_config=vision_config, text_config=text_config, image_token_id=image_token_id,
                       vision_feature_layer=-1, vision_feature_select_strategy="full",
                       projector_hidden_act="gelu", image_seq_length=vision.n_image_tokens,
                       tie_word_embeddings=getattr(text_config, "tie_word_embeddings", False))


def build_vlm(job: TrainJob):
    """The model a ``vlm`` stage trains: an earlier VLM run, or a new one around a language
    model (an earlier run's, or a fresh registry preset)."""
    from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration

    vlm = job.vlm
    torch.manual_seed(job.seed)
    if vlm.init_vlm_dir:
        return LlavaForConditionalGeneration.from_pretrained(vlm.init_vlm_dir, use_safetensors=True,
                                                             trust_remote_code=False, dtype=torch.float32)
    vocab = job.token_ids.vocab_size
    if job.init_model_dir:
        lm = AutoModelForCausalLM.from_pretrained(job.init_model_dir, use_safetensors=True,
                                                  trust_remote_code=False, dtype=torch.float32)
        grow_vocab(lm, vocab)
        text_config = lm.config
    else:
        from forge_ray.models.registry import hf_config

        lm, text_config = None, hf_config(job.arch, **job.token_ids.as_kwargs())
    model = LlavaForConditionalGeneration(llava_config(vlm.vision, text_config, vlm.image_token_id)).float()
    if lm is not None:
        model.model.language_model.load_state_dict(lm.model.state_dict())
        model.lm_head.load_state_dict(lm.lm_head.state_dict())
    return model


def grow_vocab(lm, vocab_size: int) -> int:
    """Room for ``<image>``: new rows start at the mean row (see :mod:`forge_ray.models.vocab`)."""
    from forge_ray.models.vocab import grow_embeddings

    return grow_embeddings(lm, vocab_size)


PARTS = {"vision": "model.vision_tower", "projector": "model.multi_modal_projector", "language": "model.language_model"}


def freeze(model, parts: list[str]) -> None:
    """``requires_grad=False`` on the named parts (the LM head goes with ``language``)."""
    for name, param in model.named_parameters():
        frozen = any(name.startswith(PARTS[p]) for p in parts) or ("language" in parts and name.startswith("lm_head"))
        param.requires_grad_(not frozen)


def image_processor_config(vision: VisionArch) -> dict:
    """What ``AutoImageProcessor`` needs to turn a picture into the pixels training saw."""
    from forge_ray.vlm.data import MEAN, STD

    return {"image_processor_type": "SiglipImageProcessor", "do_resize": True,
            "size": {"height": vision.image_size, "width": vision.image_size}, "resample": 3,
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": [MEAN] * 3, "image_std": [STD] * 3, "do_convert_rgb": True}


def processor_files(vlm: VisionInputs) -> dict[str, dict]:
    """The export's ``preprocessor_config.json`` and ``processor_config.json``: with them
    ``AutoProcessor`` turns an image and a prompt into exactly what the model was trained on."""
    vision = vlm.vision
    return {"preprocessor_config.json": image_processor_config(vision),
            "processor_config.json": {"processor_class": "LlavaProcessor", "patch_size": vision.patch_size,
                                      "vision_feature_select_strategy": "full", "image_token": IMAGE_TOKEN,
                                      "num_additional_image_tokens": 0}}
