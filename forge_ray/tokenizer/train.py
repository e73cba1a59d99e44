"""Train a byte-level BPE tokenizer on the organisation's own corpus.

Byte-level BPE (GPT-2 style, HF ``tokenizers``) never meets an unknown character: any UTF-8
text round-trips exactly through encode → decode, which a code/records corpus needs. The
result is saved as a ``transformers`` fast tokenizer (``AutoTokenizer.from_pretrained``
and vLLM load it) with bos/eos/pad, chat tokens and a chat template whose assistant turns
are wrapped in ``{% generation %}`` so SFT can mask the loss to assistant tokens.

Documents stream from the data layer (Ray Data); a deterministic share is held out and
used to report bytes per token (compression) in the manifest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from forge_ray.data.clean import is_heldout
from forge_ray.spec.stages import TokenizerStage


def default_chat_template(system: str, user: str, assistant: str, end: str) -> str:
    """ChatML-like template; assistant content inside generation markers (for loss masks)."""
    return (
        "{{ bos_token }}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}" + system + "{{ message['content'] }}" + end +
        "{%- elif message['role'] == 'user' -%}" + user + "{{ message['content'] }}" + end +
        "{%- elif message['role'] == 'assistant' -%}" + assistant +
        "{% generation %}{{ message['content'] }}" + end + "{% endgeneration %}"
        "{%- else -%}{{ raise_exception('unknown role: ' + message['role']) }}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}" + assistant + "{%- endif -%}"
    )


def build_bpe(spec: TokenizerStage, texts: Iterator[str], show_progress: bool = True):
    """Train the raw ``tokenizers.Tokenizer`` on an iterator of texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    st = spec.special_tokens
    special = [st.bos, st.eos, st.pad, *st.chat, *st.extra]
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size, min_frequency=spec.min_frequency, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def wrap_for_transformers(spec: TokenizerStage, tok):
    """A ``PreTrainedTokenizerFast`` with special tokens and the chat template set."""
    from transformers import PreTrainedTokenizerFast

    st = spec.special_tokens
    template = spec.chat_template or default_chat_template(*st.chat)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=st.bos, eos_token=st.eos, pad_token=st.pad,
        additional_special_tokens=[*st.chat, *st.extra], chat_template=template,
        clean_up_tokenization_spaces=False, model_max_length=1_000_000,
    )


def compression(tokenizer, texts: list[str]) -> dict[str, float]:
    """Bytes per token and exact round-trip rate on ``texts``."""
    n_bytes = n_tokens = exact = 0
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        n_bytes += len(text.encode("utf-8"))
        n_tokens += len(ids)
        exact += tokenizer.decode(ids, skip_special_tokens=False) == text
    return {"heldout_bytes_per_token": n_bytes / max(n_tokens, 1), "heldout_roundtrip_exact": exact / max(len(texts), 1),
            "heldout_docs": len(texts), "heldout_bytes": n_bytes}


def train_tokenizer(spec: TokenizerStage, docs: Iterator[dict], out_dir: Path, progress=None) -> dict:
    """Train on ``docs`` (dicts with text/file/line), save to ``out_dir``; returns metrics."""
    heldout: list[str] = []
    counts = {"train_docs": 0, "train_bytes": 0}

    def training_texts() -> Iterator[str]:
        for i, doc in enumerate(docs):
            if spec.max_documents is not None and i >= spec.max_documents:
                return
            if is_heldout(doc, spec.heldout_fraction, spec.seed):
                heldout.append(doc["text"])
                continue
            counts["train_docs"] += 1
            counts["train_bytes"] += len(doc["text"].encode("utf-8"))
            if progress is not None:
                progress(counts["train_docs"])
            yield doc["text"]

    tok = build_bpe(spec, training_texts(), show_progress=False)
    if counts["train_docs"] == 0:
        raise ValueError("no training documents left after the held-out split; lower heldout_fraction")
    hf = wrap_for_transformers(spec, tok)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out_dir))
    metrics = {**counts, "vocab_size": len(hf)}
    if heldout:
        metrics.update(compression(hf, heldout))
    return metrics
