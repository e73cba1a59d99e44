"""Growing a model's vocabulary: domain tokens for continued pre-training, ``<image>`` for VLMs.

A new token's embedding row starts at the mean of the rows of the pieces the old tokenizer
split its text into (so "Kainku", once four pieces, starts where the model already thought
those four pieces pointed), on the input side and, when untied, the output side; a token with
no pieces (a special token such as ``<image>``) starts at the mean of all rows. Random rows
would cost the model its first hundreds of steps relearning what it already knew.
"""

from __future__ import annotations

import torch


def extend_tokenizer(tokenizer, tokens: list[str]) -> dict[int, list[int]]:
    """Add ``tokens`` (in place) as normal tokens; returns ``{new id: old piece ids}``. Tokens the
    vocabulary already has are skipped."""
    vocab = tokenizer.get_vocab()
    fresh = [t for t in dict.fromkeys(tokens) if t not in vocab]
    pieces = {t: tokenizer(t, add_special_tokens=False)["input_ids"] for t in fresh}
    tokenizer.add_tokens(fresh)
    return {tokenizer.convert_tokens_to_ids(t): pieces[t] for t in fresh}


def grow_embeddings(lm, vocab_size: int, pieces: dict[int, list[int]] | None = None) -> int:
    """Resize ``lm``'s embeddings to ``vocab_size``, initialising each new row from its pieces
    (or the mean row); returns how many rows were added."""
    old = lm.get_input_embeddings().weight.shape[0]
    if vocab_size <= old:
        return 0
    pieces = pieces or {}
    with torch.no_grad():
        before_in = lm.get_input_embeddings().weight.detach().clone()
        out = lm.get_output_embeddings()
        tied = out is not None and out.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()
        before_out = out.weight.detach().clone() if out is not None and not tied else None
        lm.resize_token_embeddings(vocab_size, mean_resizing=False)
        for table, before in ((lm.get_input_embeddings().weight, before_in),
                              (lm.get_output_embeddings().weight if before_out is not None else None, before_out)):
            if table is None:
                continue
            for row in range(old, vocab_size):
                ids = [i for i in pieces.get(row, []) if i < old]
                table[row] = before[ids].mean(0) if ids else before.mean(0)
    return vocab_size - old
