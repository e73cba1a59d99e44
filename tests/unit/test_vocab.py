"""Vocabulary extension: new tokens are whole tokens afterwards, and their embedding rows
start at the mean of the rows of the pieces the old tokenizer split them into."""

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from forge_ray.models.vocab import extend_tokenizer, grow_embeddings


def _tokenizer():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    text = ["the part number of the pump is ES-5882", "Team Otter leads the pump work", "the otter swims"] * 20
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<pad>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")


def _model(vocab: int, tied: bool):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, tie_word_embeddings=tied))


def test_new_tokens_become_whole_tokens_initialised_from_their_pieces():
    tok = _tokenizer()
    old = len(tok)
    before = tok("Kainku-Otter", add_special_tokens=False)["input_ids"]
    existing = max(tok.get_vocab(), key=len)  # already a token: skipped
    pieces = extend_tokenizer(tok, ["Kainku-Otter", existing, "Kainku-Otter"])
    assert len(tok) == old + 1 and list(pieces.values()) == [before] and len(before) > 1
    new_id = next(iter(pieces))
    assert tok("Kainku-Otter", add_special_tokens=False)["input_ids"] == [new_id]
    for tied in (False, True):
        model = _model(old, tied)
        emb_in = model.get_input_embeddings().weight.detach().clone()
        emb_out = model.get_output_embeddings().weight.detach().clone()
        assert grow_embeddings(model, len(tok), pieces) == 1
        assert model.get_input_embeddings().weight.shape[0] == len(tok)
        torch.testing.assert_close(model.get_input_embeddings().weight[new_id], emb_in[before].mean(0))
        torch.testing.assert_close(model.get_input_embeddings().weight[:old], emb_in)  # old rows untouched
        expected_out = emb_in[before].mean(0) if tied else emb_out[before].mean(0)
        torch.testing.assert_close(model.get_output_embeddings().weight[new_id], expected_out)


def test_a_row_without_pieces_starts_at_the_mean_row():
    model = _model(300, tied=False)
    emb = model.get_input_embeddings().weight.detach().clone()
    assert grow_embeddings(model, 302) == 2
    torch.testing.assert_close(model.get_input_embeddings().weight[300], emb.mean(0))
    assert grow_embeddings(model, 302) == 0
