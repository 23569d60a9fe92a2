"""Incremental detokenization and stop-string matching, with real tokenizers built in code."""

from __future__ import annotations

from typing import Any

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from autoglm_server.engine.builtin.detokenize import DetokenizerFactory, IncrementalDetokenizer
from autoglm_server.engine.builtin.stops import StopMatcher
from autoglm_server.engine.builtin_models import build_tokenizer


def stream(detok: Any, ids: list[int]) -> list[str]:
    return [detok.step(i) for i in ids] + [detok.flush()]


@pytest.mark.parametrize("text", ["héllo wörld", "日本語のテキスト", "emoji 🙂👍🏽 end", "a\u0301b"])
def test_multibyte_characters_split_across_tokens_come_out_whole(text: str) -> None:
    tokenizer = build_tokenizer()
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == len(text.encode())  # one token per byte: every multi-byte character is split
    for detok in (DetokenizerFactory(tokenizer).create(()), IncrementalDetokenizer(tokenizer, [])):
        deltas = stream(detok, ids)
        assert "".join(deltas) == text
        assert all("\ufffd" not in d for d in deltas)


def test_builtin_tokenizer_round_trips_and_is_byte_level() -> None:
    tokenizer = build_tokenizer()
    text = "any UTF-8 ✓ \x00 text"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert tokenizer.encode("x", add_special_tokens=True)[0] == tokenizer.bos_token_id
    assert DetokenizerFactory(tokenizer).byte_level


def test_invalid_utf8_decodes_exactly_like_a_full_decode() -> None:
    tokenizer = build_tokenizer()
    ids = [0xE4, 0x61, 0x80, 0xE4, 0xB8, 0xF0, 0x9F, 0x98, 0x41, tokenizer.eos_token_id, 0xE4]
    deltas = stream(DetokenizerFactory(tokenizer).create(()), ids)
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)


def metaspace_tokenizer() -> Any:
    """A SentencePiece-style tokenizer: words carry their leading space as '▁'."""
    words = ["<unk>", "</s>", "▁Hello", "▁world", "▁again", ",", "▁ü", "ber"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace()
    core.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="</s>")


def test_leading_spaces_of_merged_tokens_survive_incremental_decoding() -> None:
    tokenizer = metaspace_tokenizer()
    factory = DetokenizerFactory(tokenizer)
    assert not factory.byte_level
    prompt = tokenizer.convert_tokens_to_ids(["▁Hello"])
    generated = tokenizer.convert_tokens_to_ids(["▁world", ",", "▁again", "▁ü", "ber"])
    deltas = stream(factory.create(tuple(prompt)), generated)
    # Decoded alone, "▁world" would lose its space; after the prompt it keeps it.
    assert "".join(deltas) == " world, again über"
    assert deltas[0] == " world"


def test_stop_matcher_holds_back_prefixes_until_unambiguous() -> None:
    matcher = StopMatcher(["STOP", "\n\n"])
    assert matcher.feed("abc S") == ("abc ", None)
    assert matcher.feed("T") == ("", None)
    assert matcher.feed("x") == ("STx", None)
    assert matcher.feed("ST") == ("", None)
    assert matcher.feed("OP and more") == ("", "STOP")


def test_stop_matcher_picks_the_earliest_match_and_flushes_at_the_end() -> None:
    matcher = StopMatcher(["bc", "abcd"])
    assert matcher.feed("xab") == ("x", None)
    assert matcher.feed("cd") == ("a", "bc")
    tail = StopMatcher(["END"])
    assert tail.feed("the EN") == ("the ", None)
    assert tail.feed("", final=True) == ("EN", None)
    assert StopMatcher([]).feed("anything") == ("anything", None)


@pytest.mark.parametrize("split", [1, 2, 3, 5])
def test_gathered_tokens_decode_to_the_same_text_as_one_token_at_a_time(split: int) -> None:
    # The engine detokenizes a request without stop strings once per hand-off, several tokens at a
    # time: the text must not depend on where the hand-offs fall, invalid UTF-8 included.
    tokenizer = build_tokenizer()
    ids = [*tokenizer.encode("héllo 日本 🙂 end", add_special_tokens=False), 0xE4, 0x61, 0x80, 0xF0, 0x9F]
    metaspace = metaspace_tokenizer()
    words = metaspace.convert_tokens_to_ids(["▁world", ",", "▁again", "▁ü", "ber"])
    for factory, prompt, generated in (
        (DetokenizerFactory(tokenizer), (), ids),
        (DetokenizerFactory(metaspace), tuple(metaspace.convert_tokens_to_ids(["▁Hello"])), words),
    ):
        one_by_one = "".join(stream(factory.create(prompt), generated))
        detok = factory.create(prompt)
        pieces = [detok.steps(generated[i : i + split]) for i in range(0, len(generated), split)]
        assert "".join(pieces) + detok.flush() == one_by_one
