import json

import numpy as np
import pytest

from inputs.vocabulary import END_ID, PAD_ID, SPECIAL_TOKENS, START_ID, UNK_ID, Vocabulary, clean_caption


def test_cleaning_lowercases_drops_punctuation_and_digit_tokens():
    assert clean_caption("  A Dog's  ball, 2 dogs & 3rd place!  ") == "a dog s ball dogs place"
    assert clean_caption("...") == ""


def test_special_tokens_cannot_collide_with_cleaned_words():
    vocabulary = Vocabulary.build([clean_caption("<start> <end> <pad> <unk> start end")] * 3, min_count=1)
    assert vocabulary.tokens[:4] == list(SPECIAL_TOKENS)
    assert len(set(vocabulary.tokens)) == len(vocabulary.tokens)
    assert "start" in vocabulary.ids and vocabulary.ids["start"] >= 4


def test_minimum_count_and_unknown_words():
    vocabulary = Vocabulary.build(["a dog runs", "a dog sits", "a cat"], min_count=2)
    assert set(vocabulary.tokens[4:]) == {"a", "dog"}
    row = vocabulary.encode("a zebra runs", length=5)
    assert row.tolist() == [START_ID, vocabulary.ids["a"], UNK_ID, UNK_ID, END_ID, PAD_ID, PAD_ID]


def test_encode_cuts_long_captions_and_decode_stops_at_end():
    vocabulary = Vocabulary.build(["one two three four"], min_count=1)
    row = vocabulary.encode("one two three four", length=2)
    assert len(row) == 4 and row[-1] == END_ID
    assert vocabulary.decode(row) == "one two"
    assert vocabulary.decode(np.array([START_ID, vocabulary.ids["three"], END_ID, vocabulary.ids["one"]])) == "three"


def test_json_round_trip_and_foreign_file(tmp_path):
    vocabulary = Vocabulary.build(["b a a", "c"], min_count=1)
    path = str(tmp_path / "vocabulary.json")
    vocabulary.save(path)
    assert Vocabulary.load(path).tokens == vocabulary.tokens
    (tmp_path / "other.json").write_text(json.dumps({"tokens": ["x", "y"]}))
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary.load(str(tmp_path / "other.json"))
