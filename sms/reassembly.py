"""Putting incoming concatenated parts back together: the pure logic, no database.

The store keeps the fragments of one (source, reference) group; this module turns them into
text. Payload octets are joined before decoding, because a sender may cut a UTF-16 surrogate
pair or a GSM escape pair between two parts and only the joined octets decode right.
"""

from dataclasses import dataclass

from sms.encoding import alphabet_of, decode_short_message


@dataclass
class Fragment:
    """One incoming part: its concatenation info and its user data (UDH already stripped)."""

    reference: int
    total: int
    seq: int
    payload: bytes
    data_coding: int


@dataclass
class AssembledText:
    """The text of a concatenated message, or its octets in hex if it is binary.

    An incomplete message still has text: the parts received, with nothing where a part is
    missing.
    """

    text: str | None
    binary_hex: str | None
    complete: bool
    parts_received: int
    parts_expected: int


def _usable(fragments: list[Fragment]) -> dict[int, Fragment]:
    """The fragments by seq: the first of duplicates kept, impossible numbers dropped."""
    references = {fragment.reference for fragment in fragments}
    if len(references) > 1:
        raise ValueError(f"fragments of different messages: references {sorted(references)}")
    by_seq: dict[int, Fragment] = {}
    for fragment in fragments:
        if 1 <= fragment.seq <= fragment.total:
            by_seq.setdefault(fragment.seq, fragment)
    return by_seq


def _expected(by_seq: dict[int, Fragment]) -> int:
    return max((fragment.total for fragment in by_seq.values()), default=0)


def is_complete(fragments: list[Fragment]) -> bool:
    """True when every part from 1 to total has arrived."""
    by_seq = _usable(fragments)
    expected = _expected(by_seq)
    return expected > 0 and len(by_seq) == expected


def _contiguous_runs(seqs: list[int]) -> list[list[int]]:
    """[1, 2, 4, 5, 7] -> [[1, 2], [4, 5], [7]]."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and runs[-1][-1] == seq - 1:
            runs[-1].append(seq)
        else:
            runs.append([seq])
    return runs


def assemble(fragments: list[Fragment], default_alphabet: str = "gsm7") -> AssembledText:
    """Join the fragments of one message, in seq order whatever the order they came in.

    Duplicate seqs are ignored (the first one counts: SMSCs redeliver), as are seqs outside
    1..total. The data_coding of the lowest seq decides how the whole is decoded. Each run of
    consecutive parts is joined and decoded on its own, so octets on both sides of a missing
    part are never read as one character. Raises ValueError for fragments of different
    references (a grouping mistake by the caller); never for their content.
    """
    by_seq = _usable(fragments)
    expected = _expected(by_seq)
    seqs = sorted(by_seq)
    received = len(seqs)
    complete = expected > 0 and received == expected
    if not seqs:
        return AssembledText("", None, complete, received, expected)

    data_coding = by_seq[seqs[0]].data_coding
    if alphabet_of(data_coding, default_alphabet) == "binary":
        octets = b"".join(by_seq[seq].payload for seq in seqs)
        return AssembledText(None, octets.hex(), complete, received, expected)

    texts = []
    for run in _contiguous_runs(seqs):
        octets = b"".join(by_seq[seq].payload for seq in run)
        text, _ = decode_short_message(octets, data_coding, default_alphabet)
        texts.append(text)
    return AssembledText("".join(texts), None, complete, received, expected)
