"""``transformers`` internals: building a specific model class from a config."""

from __future__ import annotations

CHECKED = {"transformers": "5.19"}


def model_from_config(model_class: type, config, dtype):
    """An untrained ``model_class`` (e.g. ``LlamaForSequenceClassification``) for ``config`` in
    ``dtype``. ``AutoModel*.from_config`` picks the class from the config's architecture; the
    class's own builder that also applies ``dtype`` and the attention implementation is the
    underscored ``_from_config``."""
    return model_class._from_config(config, dtype=dtype)
