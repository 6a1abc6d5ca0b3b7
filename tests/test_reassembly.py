"""Putting incoming concatenated parts back together."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms.reassembly import AssembledText, Fragment, assemble, is_complete
from sms.splitting import parse_udh, split_message


def fragments_of(payloads: list[bytes], data_coding: int, reference: int = 7) -> list[Fragment]:
    total = len(payloads)
    return [
        Fragment(reference, total, seq, payload, data_coding)
        for seq, payload in enumerate(payloads, start=1)
    ]


def test_in_order():
    fragments = fragments_of([b"Hello, ", b"world"], 0)
    assert assemble(fragments) == AssembledText("Hello, world", None, True, 2, 2)
    assert is_complete(fragments)


def test_out_of_order():
    first, second, third = fragments_of([b"one ", b"two ", b"three"], 3)
    result = assemble([third, first, second])
    assert result == AssembledText("one two three", None, True, 3, 3)


def test_duplicates_are_ignored_and_the_first_one_counts():
    first, second = fragments_of([b"ab", b"cd"], 3)
    redelivered = Fragment(7, 2, 2, b"XX", 3)
    result = assemble([second, first, redelivered, first])
    assert result == AssembledText("abcd", None, True, 2, 2)


def test_incomplete_lacks_the_missing_parts():
    first, second, third, fourth = fragments_of([b"a", b"b", b"c", b"d"], 0)
    result = assemble([fourth, first, third])
    assert result == AssembledText("acd", None, False, 3, 4)
    assert not is_complete([fourth, first, third])
    assert not is_complete([first, first])


def test_nothing_is_incomplete():
    assert assemble([]) == AssembledText("", None, False, 0, 0)
    assert not is_complete([])


def test_surrogate_pair_split_across_two_fragments():
    octets = "ab😀".encode("utf-16-be")  # 00 61 00 62 d8 3d de 00
    fragments = fragments_of([octets[:6], octets[6:]], 8)
    assert assemble(fragments[::-1]).text == "ab😀"
    # Decoding each part alone would have lost the emoji.
    assert "😀" not in assemble(fragments[:1]).text


def test_gsm_escape_split_across_two_fragments():
    fragments = fragments_of([b"5\x1b", b"\x65 off"], 0)
    assert assemble(fragments).text == "5€ off"


def test_octets_on_both_sides_of_a_gap_are_not_joined():
    # Part 1 ends with a high surrogate and part 3 starts with a low one: with part 2 missing
    # they are not one character.
    fragments = fragments_of([b"\x00a\xd8\x3d", b"\x00b", b"\xde\x00\x00c"], 8)
    result = assemble([fragments[0], fragments[2]])
    assert result.text == "a\ufffd\ufffdc"
    assert not result.complete


def test_latin1_default_alphabet():
    fragments = fragments_of([b"caf", b"\xe9"], 0)
    assert assemble(fragments, default_alphabet="latin1").text == "café"


def test_binary_is_hex_of_all_octets():
    fragments = fragments_of([b"\x01\x02", b"\xff"], 4)
    assert assemble(fragments) == AssembledText(None, "0102ff", True, 2, 2)


def test_impossible_seqs_are_ignored():
    fragments = [Fragment(1, 2, 1, b"a", 0), Fragment(1, 2, 3, b"z", 0), Fragment(1, 2, 0, b"z", 0)]
    assert assemble(fragments) == AssembledText("a", None, False, 1, 2)


def test_mixed_references_are_a_caller_mistake():
    with pytest.raises(ValueError, match="references"):
        assemble([Fragment(1, 2, 1, b"a", 0), Fragment(2, 2, 2, b"b", 0)])


@given(
    text=st.text(max_size=600),
    order=st.randoms(use_true_random=False),
    concat=st.sampled_from(["udh", "udh16"]),
)
def test_split_then_reassemble_in_any_order_gives_the_text_back(text, order, concat):
    result = split_message(text, concat=concat, reference=513)
    fragments = []
    for part in result.parts:
        info, payload = parse_udh(part.short_message) if part.esm_class else (None, None)
        if info is None:
            info_fields = (0, 1, 1)
            payload = part.short_message
        else:
            info_fields = (info.reference, info.total, info.seq)
        fragments.append(Fragment(*info_fields, payload, result.data_coding))
    order.shuffle(fragments)
    assert assemble(fragments + fragments[:1]) == AssembledText(
        text, None, True, len(result.parts), len(result.parts)
    )
