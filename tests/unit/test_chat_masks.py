"""SFT loss masks for the chat templates imported models ship (none has ``{% generation %}``
markers): exactly each assistant turn's content and its end-of-turn marker are trained on,
the same mask transformers gives where markers exist, and a template that rewrites earlier
turns is refused by name instead of masked wrongly."""

from __future__ import annotations

import pytest

from forge_ray.data.chat_masks import TemplateNotIncremental, assistant_token_mask, has_generation_markers
from tests.chat_templates import CHATML, GEMMA, LLAMA3, MISTRAL, MISTRAL_SYSTEM_LAST, SPECIAL

TEMPLATES = {  # template, bos, eos, what each assistant turn's trained tokens read
    "chatml": (CHATML, None, "<|im_end|>", "{}<|im_end|>"),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", "{}<|eot_id|>"),
    "gemma": (GEMMA, "<bos>", "<end_of_turn>", "{}<end_of_turn>"),
    "mistral": (MISTRAL, "<s>", "</s>", " {}</s>"),
}
CONVERSATION = [{"role": "user", "content": "Who leads Team Otter?"},
                {"role": "assistant", "content": "Team Otter is led by Mara Quill."},
                {"role": "user", "content": "And since when?"},
                {"role": "assistant", "content": "Since the spring of 2019."}]


@pytest.fixture(scope="module")
def base_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = [m["content"] for m in CONVERSATION] * 20 + ["system user assistant model You are helpful."] * 20
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _tokenizer(base, template: str, bos: str | None, eos: str):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=base, bos_token=bos, eos_token=eos, pad_token=eos,
                                   chat_template=template)


def _trained_runs(tok, ids: list[int], mask: list[int]) -> list[str]:
    runs, current = [], []
    for token, m in zip(ids, mask):
        if m:
            current.append(token)
        elif current:
            runs.append(tok.decode(current))
            current = []
    return runs + ([tok.decode(current)] if current else [])


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_the_mask_covers_exactly_each_assistant_turn_and_its_end_marker(name, base_tokenizer):
    template, bos, eos, turn = TEMPLATES[name]
    tok = _tokenizer(base_tokenizer, template, bos, eos)
    assert not has_generation_markers(template)
    messages = ([{"role": "system", "content": "You are helpful."}] if name != "mistral" else []) + CONVERSATION
    ids, mask = assistant_token_mask(tok, messages)
    assert ids == list(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    assistant = [m["content"] for m in messages if m["role"] == "assistant"]
    assert _trained_runs(tok, ids, mask) == [turn.format(a) for a in assistant]


def test_rendering_gives_the_mask_transformers_gives_from_generation_markers(base_tokenizer):
    marked = CHATML.replace("{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}",
                            "{{ '<|im_start|>' + m['role'] + '\\n' }}{%- if m['role'] == 'assistant' %}{% generation %}"
                            "{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{%- else %}"
                            "{{ m['content'] + '<|im_end|>\\n' }}{%- endif %}")
    tok = _tokenizer(base_tokenizer, marked, None, "<|im_end|>")
    assert has_generation_markers(marked)
    out = tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert (list(out["input_ids"]), list(out["assistant_masks"])) == assistant_token_mask(tok, CONVERSATION)


def test_a_template_that_rewrites_earlier_turns_is_refused_by_name(base_tokenizer):
    tok = _tokenizer(base_tokenizer, MISTRAL_SYSTEM_LAST, "<s>", "</s>")
    with pytest.raises(TemplateNotIncremental, match=r"renders message 3 \(the assistant's\).*\{% generation %\} markers"):
        assistant_token_mask(tok, [{"role": "system", "content": "Be brief."}] + CONVERSATION)
    ids, mask = assistant_token_mask(tok, CONVERSATION)  # without a system message it is incremental
    assert sum(mask) > 0


def test_sft_packing_of_an_imported_models_template_trains_on_its_assistant_tokens(base_tokenizer, tmp_path):
    import json

    import numpy as np

    from forge_ray.data.pack import TokenizeBatch

    _tokenizer(base_tokenizer, LLAMA3, "<|begin_of_text|>", "<|eot_id|>").save_pretrained(tmp_path)
    rows = TokenizeBatch(str(tmp_path), "sft", seq_len=128)(
        {"text": np.array([""]), "payload": np.array([json.dumps({"messages": CONVERSATION})])})
    loss_mask = np.asarray(rows["loss_mask"])[0]
    ids = np.asarray(rows["input_ids"])[0]
    assert loss_mask.sum() > 0
    assert _trained_runs(_tokenizer(base_tokenizer, LLAMA3, "<|begin_of_text|>", "<|eot_id|>"), list(ids), list(loss_mask)) \
        == ["Team Otter is led by Mara Quill.<|eot_id|>", "Since the spring of 2019.<|eot_id|>"]
