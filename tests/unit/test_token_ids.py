"""The driver reads a tokenizer's size and special ids from its files without importing
transformers; the figures must be the ones transformers gives for the same directory."""

from __future__ import annotations

from transformers import AutoTokenizer

from forge_ray.spec.stages import TokenizerStage
from forge_ray.tokenizer.train import train_tokenizer
from forge_ray.train.job import TokenIds


def test_a_trained_tokenizers_ids_match_transformers(tmp_path):
    docs = ({"text": f"widget {i} ships from plant {i % 7} to the north depot", "file": "d.md", "line": i,
             "doc_id": f"d{i}"}
            for i in range(300))
    spec = TokenizerStage(kind="tokenizer", name="tok", vocab_size=300, sources=[{"path": str(tmp_path)}])
    train_tokenizer(spec, docs, tmp_path / "tok")
    assert TokenIds.read(tmp_path / "tok") == TokenIds.of(AutoTokenizer.from_pretrained(tmp_path / "tok"))


def test_an_imported_tokenizer_with_added_tokens_and_token_objects_matches_transformers(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AddedToken, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel()
    raw.train_from_iterator(["alpha beta gamma delta"] * 20, trainers.BpeTrainer(vocab_size=120,
                                                                                   special_tokens=["<unk>", "<s>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token=AddedToken("<s>"),
                                  eos_token="</s>")  # eos (and pad, none here) added on top of the vocabulary
    tok.add_tokens(["<|tool|>"])
    tok.save_pretrained(tmp_path / "imported")
    ids = TokenIds.read(tmp_path / "imported")
    assert ids == TokenIds.of(AutoTokenizer.from_pretrained(tmp_path / "imported"))
    assert ids.pad_id is None and ids.eos_id is not None
