"""The VLM's training objective: the language-model loss of :class:`CausalLMObjective`
(target tokens only, validation bits-per-byte), with the logits of a LLaVA forward pass
that splices the projected image patches into the ``<image>`` positions.

Rows are not packed (one image and its text per row), so a padding mask is all the
attention mask needs."""

from __future__ import annotations

from forge_ray.train.objectives import CausalLMObjective


class VLMObjective(CausalLMObjective):
    batch_keys = ("input_ids", "segment_ids", "position_ids", "loss_mask", "pixel_values")

    def logits(self, input_ids, segment_ids, position_ids, pixel_values=None, **inputs):
        size = self.model.config.vision_config.image_size
        dtype = next(self.model.parameters()).dtype
        pixels = pixel_values.view(input_ids.shape[0], 3, size, size).to(dtype)
        out = self.model(input_ids=input_ids, pixel_values=pixels, attention_mask=(segment_ids != 0).long(),
                         position_ids=position_ids)
        return out.logits[:, :-1].float(), out
