"""The SMPP codecs: PDUs (cross-checked against smpp34, an independent implementation), the
GSM 7-bit alphabet and its packing, user data headers, data_coding and segmentation."""

from __future__ import annotations

import pytest
import smpp34
from hypothesis import given
from hypothesis import strategies as st

from smsinbox.core import gsm
from smsinbox.models import Encoding
from smsinbox.smpp import coding, messages, udh
from smsinbox.smpp.coding import Alphabet
from smsinbox.smpp.pdu import Command, DecodeError, Pdu, Status, Tag, decode, encode

GSM_CHARS = sorted(gsm.CHARACTERS)
gsm_texts = st.text(alphabet=GSM_CHARS, max_size=400)
# Addresses and the like are ASCII (smpp34 writes a string as UTF-8, smsinbox as Latin-1).
cstrings = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), max_size=15)


# GSM 7-bit


def test_every_gsm_character_round_trips_and_extensions_take_two_septets() -> None:
    text = "".join(GSM_CHARS)
    assert gsm.decode(gsm.encode(text)) == text
    assert gsm.septet_count("€") == 2 and gsm.septet_count("a€[") == 5
    assert gsm.encode("€") == b"\x1b\x65"


def test_text_outside_the_alphabet_is_refused() -> None:
    assert not gsm.is_gsm("naïve")  # ï is not in the default alphabet
    with pytest.raises(gsm.NotInAlphabet):
        gsm.encode("naïve")
    with pytest.raises(gsm.NotInAlphabet):
        gsm.septet_count("😀")


def test_an_unknown_escape_reads_as_the_default_character_and_a_trailing_one_as_nothing() -> None:
    assert gsm.decode(b"\x1b\x41b") == "Ab"
    assert gsm.decode(b"ab\x1b") == "ab"


def test_packing_matches_the_air_interface() -> None:
    # TS 23.038's own example and a reference value from the SMS PDU literature.
    assert gsm.pack(gsm.encode("hellohello")).hex() == "e8329bfd4697d9ec37"
    assert gsm.unpack(bytes.fromhex("e8329bfd4697d9ec37")) == gsm.encode("hellohello")


def test_seven_spare_bits_are_padded_with_cr_not_read_as_at() -> None:
    seven = gsm.encode("1234567")  # 49 bits: 7 spare in the 7th octet
    packed = gsm.pack(seven)
    assert len(packed) == 7 and packed[-1] >> 1 == 0x0D
    assert gsm.decode(gsm.unpack(packed)) == "1234567"


@given(gsm_texts, st.integers(0, 6))
def test_unpack_gives_back_what_pack_packed(text: str, fill_bits: int) -> None:
    septets = gsm.encode(text)
    back = gsm.unpack(gsm.pack(septets, fill_bits), fill_bits)
    # A text ending in CR on an octet boundary gets a second CR (TS 23.038 6.1.2.3.1).
    assert back == septets or (septets.endswith(b"\r") and back == septets + b"\r")


@given(gsm_texts)
def test_gsm_text_round_trips(text: str) -> None:
    assert gsm.decode(gsm.encode(text)) == text
    assert gsm.septet_count(text) == len(gsm.encode(text))


# User data headers


def test_concatenation_elements_are_found_among_others() -> None:
    # An application port element (0x05) before the 8-bit concatenation element.
    header = bytes([11, 0x05, 4, 0x0B, 0x84, 0x23, 0xF0, 0x00, 3, 0x2A, 3, 2])
    assert udh.part(header) == udh.Part(reference=0x2A, total=3, sequence=2)
    sixteen = bytes([6, 0x08, 4, 0x12, 0x34, 2, 1])
    assert udh.part(sixteen) == udh.Part(reference=0x1234, total=2, sequence=1)
    head, rest = udh.split(sixteen + b"text")
    assert (head, rest) == (sixteen, b"text")


@pytest.mark.parametrize("total, sequence", [(0, 0), (3, 0), (2, 3)])
def test_a_concatenation_element_with_impossible_numbers_is_ignored(
    total: int, sequence: int
) -> None:
    assert udh.part(bytes([5, 0x00, 3, 7, total, sequence])) is None


@pytest.mark.parametrize(
    "message",
    [b"", bytes([9, 0x00, 3, 1, 2]), bytes([3, 0x00, 3, 1]), bytes([1, 0x00])],
)
def test_a_header_cut_short_is_malformed(message: bytes) -> None:
    with pytest.raises(udh.MalformedHeader):
        head, _ = udh.split(message)
        udh.elements(head)


@given(st.integers(0, 0xFFFF), st.integers(1, 255), st.data())
def test_concatenation_headers_read_back(reference: int, total: int, data: st.DataObject) -> None:
    sequence = data.draw(st.integers(1, total))
    assert udh.part(udh.concatenation(reference, total, sequence)) == udh.Part(
        reference, total, sequence
    )


# data_coding


@pytest.mark.parametrize(
    "data_coding, expected",
    [
        (0x00, Alphabet.GSM),
        (0x01, Alphabet.ASCII),
        (0x02, Alphabet.BINARY),
        (0x03, Alphabet.LATIN1),
        (0x04, Alphabet.BINARY),
        (0x06, Alphabet.CYRILLIC),
        (0x08, Alphabet.UCS2),
        (0x10, Alphabet.GSM),  # general data coding, class 0
        (0x14, Alphabet.BINARY),
        (0x18, Alphabet.UCS2),
        (0x38, Alphabet.BINARY),  # compressed
        (0x48, Alphabet.UCS2),  # automatic deletion group
        (0xC0, Alphabet.GSM),
        (0xE1, Alphabet.UCS2),
        (0xF0, Alphabet.GSM),
        (0xF6, Alphabet.BINARY),
        (0x85, Alphabet.BINARY),  # reserved
    ],
)
def test_data_coding_names_the_alphabet(data_coding: int, expected: Alphabet) -> None:
    assert coding.alphabet(data_coding) is expected


def test_data_coding_zero_is_the_smsc_default_alphabet() -> None:
    assert coding.alphabet(0, default=Alphabet.LATIN1) is Alphabet.LATIN1
    assert coding.text(Alphabet.LATIN1, "café".encode("latin-1")) == "café"
    assert coding.encoding(Alphabet.LATIN1) is Encoding.GSM7
    assert coding.encoding(Alphabet.BINARY) is Encoding.BINARY


def test_ucs2_reads_surrogate_pairs_even_split_between_parts() -> None:
    octets = "a😀b".encode("utf-16-be")
    first, second = octets[:3], octets[3:]  # the pair's first half in part one
    assert coding.text(Alphabet.UCS2, first + second) == "a😀b"
    assert coding.text(Alphabet.UCS2, b"\xd8\x3d") == "\ufffd"  # a lone half


# Segmentation


@pytest.mark.parametrize(
    "text, alphabet, sizes",
    [
        ("a" * 160, Alphabet.GSM, [160]),
        ("a" * 161, Alphabet.GSM, [153, 8]),
        ("a" * 150 + "€" * 10, Alphabet.GSM, [152, 18]),  # 170 septets
        ("a" * 152 + "€", Alphabet.GSM, [154]),  # 154 septets fit one message
        ("a" * 152 + "€" + "a" * 10, Alphabet.GSM, [152, 12]),  # the escape kept with its code
        ("é" * 70, Alphabet.GSM, [70]),  # é is in the GSM alphabet
        ("ï" * 70, Alphabet.UCS2, [140]),
        ("ï" * 71, Alphabet.UCS2, [134, 8]),
        ("ï" * 66 + "😀" + "ï" * 5, Alphabet.UCS2, [132, 14]),  # a surrogate pair never split
    ],
)
def test_a_text_is_cut_into_the_fewest_parts(
    text: str, alphabet: Alphabet, sizes: list[int]
) -> None:
    segments = coding.segment(text)
    assert segments.alphabet is alphabet
    assert [len(payload) for payload in segments.payloads] == sizes
    assert coding.count_parts(text) == len(sizes)


def test_ten_euro_signs_make_160_characters_two_parts() -> None:
    assert coding.count_parts("a" * 150 + "€" * 10) == 2


@given(st.text(max_size=600))
def test_parts_join_into_the_text_and_each_fits_a_short_message(text: str) -> None:
    segments = coding.segment(text)
    joined = b"".join(segments.payloads)
    assert coding.text(segments.alphabet, joined) == text
    limit = coding.SINGLE if len(segments.payloads) == 1 else coding.PART
    unit = 1 if segments.alphabet is Alphabet.GSM else 2
    assert all(len(payload) <= limit[segments.alphabet] * unit for payload in segments.payloads)


# PDUs


def deliver_sm(**params: object) -> Pdu:
    values: dict[str, object] = {
        "source_addr": "447700900123",
        "destination_addr": "447700900001",
        "short_message": b"hello",
    }
    values.update(params)
    return Pdu(Command.DELIVER_SM, 7, params=values)  # type: ignore[arg-type]


def test_an_encoded_pdu_decodes_to_itself() -> None:
    pdu = deliver_sm(esm_class=0x40, data_coding=8, registered_delivery=1)
    pdu.tlvs = {Tag.SAR_MSG_REF_NUM: b"\x01\x02", Tag.MESSAGE_PAYLOAD: b"x" * 300}
    back = decode(encode(pdu))
    assert back.command is Command.DELIVER_SM and back.sequence == 7
    assert back.params["short_message"] == b"hello" and back.number("esm_class") == 0x40
    assert back.tlv_int(Tag.SAR_MSG_REF_NUM) == 0x0102
    assert back.tlvs[Tag.MESSAGE_PAYLOAD] == b"x" * 300


@given(
    source=cstrings,
    destination=cstrings,
    message=st.binary(max_size=254),
    data_coding=st.integers(0, 255),
    esm_class=st.integers(0, 255),
    sequence=st.integers(1, 0x7FFFFFFF),
)
def test_smpp34_reads_what_smsinbox_writes(
    source: str, destination: str, message: bytes, data_coding: int, esm_class: int, sequence: int
) -> None:
    pdu = Pdu(
        Command.SUBMIT_SM,
        sequence,
        params={
            "source_addr": source,
            "destination_addr": destination,
            "short_message": message,
            "data_coding": data_coding,
            "esm_class": esm_class,
            "registered_delivery": 1,
        },
        tlvs={Tag.USER_MESSAGE_REFERENCE: b"\x00\x2a"},
    )
    theirs = smpp34.decode(encode(pdu))
    assert isinstance(theirs, smpp34.SubmitSm)
    assert (theirs.source_addr, theirs.destination_addr) == (source, destination)
    assert theirs.short_message == message and theirs.sequence_number == sequence
    assert (theirs.data_coding, theirs.esm_class, theirs.registered_delivery) == (
        data_coding,
        esm_class,
        1,
    )
    assert [(tlv.tag, tlv.value) for tlv in theirs.tlvs] == [(0x0204, b"\x00\x2a")]


@given(
    source=cstrings,
    destination=cstrings,
    message=st.binary(max_size=254),
    data_coding=st.integers(0, 255),
    payload=st.binary(max_size=1000),
)
def test_smsinbox_reads_what_smpp34_writes(
    source: str, destination: str, message: bytes, data_coding: int, payload: bytes
) -> None:
    theirs = smpp34.DeliverSm(
        source,
        destination,
        message,
        data_coding=data_coding,
        esm_class=0x40,
        service_type="CMT",
        source_addr_ton=1,
        tlvs=[
            smpp34.Tlv(smpp34.TLV_SAR_MSG_REF_NUM, b"\x00\x07"),
            smpp34.Tlv(smpp34.TLV_MESSAGE_PAYLOAD, payload),
        ],
        sequence_number=99,
    )
    ours = decode(theirs.encode())
    assert ours.command is Command.DELIVER_SM and ours.sequence == 99
    assert (ours.text("source_addr"), ours.text("destination_addr")) == (source, destination)
    assert ours.octets("short_message") == message
    assert (ours.number("data_coding"), ours.number("esm_class")) == (data_coding, 0x40)
    assert (ours.text("service_type"), ours.number("source_addr_ton")) == ("CMT", 1)
    assert ours.tlv_int(Tag.SAR_MSG_REF_NUM) == 7 and ours.tlvs[Tag.MESSAGE_PAYLOAD] == payload


def test_responses_carry_no_body_on_error_and_may_stop_short() -> None:
    request = deliver_sm()
    refused = encode(request.response(Status.ESME_RX_T_APPN))
    assert len(refused) == 16
    back = decode(refused)
    assert back.command is Command.DELIVER_SM_RESP and back.status == Status.ESME_RX_T_APPN
    assert decode(encode(request.response(message_id=""))).text("message_id") == ""


@pytest.mark.parametrize(
    "octets, status",
    [
        # sm_length of 200 with 5 octets after it
        (encode(deliver_sm())[:-6] + b"\xc8hello", Status.ESME_RINVMSGLEN),
        # a TLV that promises 10 octets and has 2
        (encode(deliver_sm()) + b"\x04\x24\x00\x0aab", Status.ESME_RINVOPTPARSTREAM),
        # command_id 0x00000099
        (bytes.fromhex("00000010 00000099 00000000 00000001"), Status.ESME_RINVCMDID),
        # a source_addr with no NUL: the body ends inside it
        (bytes.fromhex("00000014 00000005 00000000 00000001 00414243"), Status.ESME_RINVPARLEN),
    ],
)
def test_malformed_pdus_say_what_is_wrong(octets: bytes, status: Status) -> None:
    # Length fields fixed up so that only the named fault remains.
    octets = len(octets).to_bytes(4, "big") + octets[4:]
    with pytest.raises(DecodeError) as raised:
        decode(octets)
    assert raised.value.status is status


def test_a_length_beyond_any_pdu_is_refused_before_it_is_read() -> None:
    with pytest.raises(DecodeError) as raised:
        decode(bytes.fromhex("7fffffff 00000005 00000000 00000001"))
    assert raised.value.status is Status.ESME_RINVCMDLEN


# Short messages, parts and receipts


def parts_of(text: str, reference: int) -> list[Pdu]:
    """deliver_sm PDUs of `text` as an SMSC sends a long message: a concatenation header
    on each part."""
    segments = coding.segment(text)
    total = len(segments.payloads)
    pdus = []
    for sequence, payload in enumerate(segments.payloads, 1):
        header = udh.concatenation(reference, total, sequence) if total > 1 else b""
        pdus.append(
            deliver_sm(
                short_message=header + payload,
                esm_class=udh.UDHI if header else 0,
                data_coding=segments.data_coding,
            )
        )
    return pdus


@given(
    st.text(min_size=1, max_size=700),
    st.integers(0, 0xFFFF),
    st.randoms(use_true_random=False),
    st.data(),
)
def test_parts_in_any_order_and_repeated_give_the_message_back(
    text: str, reference: int, shuffler: object, data: st.DataObject
) -> None:
    read = [messages.read(pdu) for pdu in parts_of(text, reference)]
    assert all(isinstance(message, messages.ShortMessage) for message in read)
    arrived = read + data.draw(st.lists(st.sampled_from(read), max_size=3))  # repeats
    shuffler.shuffle(arrived)  # type: ignore[attr-defined]
    total = read[0].part.total if read[0].part else 1  # type: ignore[union-attr]
    assembled = messages.assemble(
        [(m.part.sequence if m.part else 1, m.alphabet, m.units) for m in arrived],  # type: ignore[union-attr]
        total,
    )
    assert assembled.complete and assembled.text == text


def test_a_long_message_missing_a_part_says_which() -> None:
    [first, _, third] = [messages.read(pdu) for pdu in parts_of("x" * 400, 9)]
    assembled = messages.assemble(
        [(m.part.sequence, m.alphabet, m.units) for m in (first, third)],  # type: ignore[union-attr]
        3,
    )
    assert not assembled.complete and assembled.missing == [2]
    assert assembled.text == "x" * 153 + "[…]" + "x" * 94  # the gap is shown
    [only_last] = [messages.read(pdu) for pdu in parts_of("y" * 400, 9)][2:]
    assembled = messages.assemble([(3, only_last.alphabet, only_last.units)], 3)  # type: ignore[union-attr]
    assert assembled.text == "[…][…]" + "y" * 94 and assembled.missing == [1, 2]


def test_sar_tlvs_number_the_parts_where_there_is_no_header() -> None:
    pdu = deliver_sm(short_message=b"part two")
    pdu.tlvs = {
        Tag.SAR_MSG_REF_NUM: b"\x01\x00",
        Tag.SAR_TOTAL_SEGMENTS: b"\x02",
        Tag.SAR_SEGMENT_SEQNUM: b"\x02",
    }
    message = messages.read(pdu)
    assert isinstance(message, messages.ShortMessage)
    assert message.part == udh.Part(256, 2, 2)


def test_message_payload_is_the_body_where_present() -> None:
    pdu = deliver_sm(short_message=b"", data_coding=8)
    pdu.tlvs = {Tag.MESSAGE_PAYLOAD: "ï".encode("utf-16-be") * 200}
    message = messages.read(pdu)
    assert isinstance(message, messages.ShortMessage) and message.part is None
    assert coding.text(message.alphabet, message.units) == "ï" * 200


def test_packed_gsm_after_a_header_starts_at_the_next_septet() -> None:
    header = udh.concatenation(5, 2, 1)  # 6 octets: one fill bit
    packed = gsm.pack(gsm.encode("hello"), fill_bits=1)
    pdu = deliver_sm(short_message=header + packed, esm_class=udh.UDHI, data_coding=0)
    message = messages.read(pdu, packed=True)
    assert isinstance(message, messages.ShortMessage)
    assert gsm.decode(message.units) == "hello" and message.part == udh.Part(5, 2, 1)


def test_a_broken_header_makes_the_message_unreadable() -> None:
    with pytest.raises(messages.Unreadable):
        messages.read(deliver_sm(short_message=b"\x09\x00\x03", esm_class=udh.UDHI))


def test_receipts_are_read_from_tlvs_or_from_text() -> None:
    text = b"id:0123456789 sub:001 dlvrd:001 submit date:2612051200 done date:2612051201 " \
        b"stat:UNDELIV err:034 text:hello"  # fmt: skip
    receipt = messages.read(deliver_sm(short_message=text, esm_class=0x04))
    assert receipt == messages.Receipt("0123456789", messages.MessageState.UNDELIVERABLE, "034")
    pdu = deliver_sm(short_message=b"", esm_class=0x04)
    pdu.tlvs = {Tag.RECEIPTED_MESSAGE_ID: b"ab12\0", Tag.MESSAGE_STATE: b"\x02"}
    assert messages.read(pdu) == messages.Receipt("ab12", messages.MessageState.DELIVERED, "")
    assert messages.MessageState.DELIVERED.final and not messages.MessageState.ENROUTE.final


def test_a_receipt_that_names_no_message_is_read_as_a_message() -> None:
    message = messages.read(deliver_sm(short_message=b"stat:DELIVRD", esm_class=0x04))
    assert isinstance(message, messages.ShortMessage)
