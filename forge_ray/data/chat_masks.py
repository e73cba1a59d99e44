"""Which tokens of a rendered conversation are the assistant's — the SFT loss mask — for any
chat template, not only those with ``{% generation %}`` markers.

forge's own template marks assistant content with ``{% generation %}`` and transformers
returns the mask. The templates imported models ship (ChatML for Qwen, Llama 3's headers,
Gemma's turns, Mistral's ``[INST]``) have no markers: transformers then returns a mask of
zeros, and an SFT run would train on nothing. So the spans are found by rendering: the
conversation up to each assistant turn with the generation prompt, and through that turn;
the turn's tokens lie between the two renders (its content and its end-of-turn marker, which
the model must learn to emit to stop). That holds for every template whose render of a
conversation begins with its render of each earlier part; a template that rewrites earlier
turns (dropping past reasoning, say) is refused with its name, not masked wrongly.
"""

from __future__ import annotations

import re

GENERATION_MARKER = re.compile(r"{%-?\s*generation\s*-?%}")


class TemplateNotIncremental(ValueError):
    """A chat template whose render of a conversation does not begin with its render of the
    conversation's earlier turns, so assistant spans cannot be read off the renders."""


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and bool(GENERATION_MARKER.search(template))


def assistant_char_spans(tok, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the ``[start, end)`` character span of each assistant
    turn in it (content and end-of-turn marker; trailing whitespace left out)."""
    full = tok.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        through = tok.apply_chat_template(messages[:i + 1], tokenize=False)
        if not (through.startswith(before) and full.startswith(through)):
            raise TemplateNotIncremental(
                f"the chat template of {getattr(tok, 'name_or_path', '') or 'the tokenizer'} renders message {i + 1} "
                "(the assistant's) differently once later messages follow, so its tokens cannot be found by "
                "rendering; give a template with {% generation %} markers (`chat_template` in the tokenizer spec)")
        spans.append((len(before), len(through.rstrip())))
    return full, spans


def assistant_token_mask(tok, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and 1 on each token that starts inside an
    assistant span (the same ids ``apply_chat_template(tokenize=True)`` gives)."""
    text, spans = assistant_char_spans(tok, messages)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a <= start < b for a, b in spans)) for start, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask
