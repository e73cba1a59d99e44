"""Model registry: presets → transformers configs, and size/FLOP/memory estimates."""
