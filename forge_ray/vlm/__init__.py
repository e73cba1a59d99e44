"""Vision-language models: LLaVA layout, image+text data, the `vlm` stage."""
