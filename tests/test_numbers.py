"""Phone numbers as people write them: the reading rules, with and without a region, and
what they mean for routing, accounts, sign-in and sending, on both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from smsinbox.config import Settings
from smsinbox.core import numbers
from smsinbox.core.caller import INTERNAL
from smsinbox.core.ingest import Ingestor, RawInbound
from smsinbox.core.numbers import normalize_msisdn, normalize_sender, validate_region
from smsinbox.errors import InvalidInput, MissingParameter, NotFound
from smsinbox.models import IngestOutcome, SmppBind
from smsinbox.services import Services
from smsinbox.smpp.pdu import Command, Pdu, Status
from smsinbox.upstream.smpp import SmppInbound

ALICE = "447700900001"
BOB = "447700900002"
SENDER = "447700900123"


# --- the rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "region", "stored"),
    [
        # As upstreams deliver them: bare international digits, kept.
        ("447700900001", None, ALICE),
        ("447700900001", "GB", ALICE),
        ("447700900001", "DE", ALICE),
        # '+', 'tel:' and the ITU prefix '00' are international with or without a region.
        ("+447700900001", None, ALICE),
        ("+44 7700 900001", None, ALICE),
        ("+44 (0)7700 900001", None, ALICE),
        ("+44-7700-900001", "US", ALICE),
        ("tel:+44-7700-900001", None, ALICE),
        ("00447700900001", None, ALICE),
        ("0044 7700 900001", None, ALICE),
        ("0044 7700 900001", "GB", ALICE),
        ("0044 7700 900001", "US", ALICE),
        ("0044\u00a07700\u00a0900001", "AU", ALICE),
        # National forms, in their region.
        ("07700 900001", "GB", ALICE),
        ("07700900001", "GB", ALICE),
        ("07700-900-001", "GB", ALICE),
        ("(07700) 900.001", "GB", ALICE),
        ("07700\u00a0900001", "GB", ALICE),
        ("0151 23456789", "DE", "4915123456789"),
        ("0151/23456789", "DE", "4915123456789"),
        ("(201) 555-0123", "US", "12015550123"),
        ("201.555.0123", "US", "12015550123"),
        ("06 1234 5678", "IT", "390612345678"),  # the 0 is part of an Italian number
        ("312 345 6789", "IT", "393123456789"),
        # The region's own international prefix.
        ("011 44 7700 900001", "US", ALICE),
        ("0011 44 7700 900001", "AU", ALICE),
        ("8 10 44 7700 900001", "RU", ALICE),
        ("810447700900001", "RU", ALICE),
        # Without a region a national form cannot be read: its digits are kept.
        ("07700 900001", None, "07700900001"),
        ("07700900001", None, "07700900001"),
        # Short codes and other numbers that are no whole number of the region: as written.
        ("81025", None, "81025"),
        ("81025", "GB", "81025"),
        ("8 1025", "GB", "81025"),
        ("000", "AU", "000"),
        ("000", None, "000"),
        ("0123", "GB", "0123"),
        (" 123 ", None, "123"),
        # Bare digits that do not start with 0 are never re-read: how upstreams send them.
        ("2015550123", "US", "2015550123"),
        ("7700900001", "GB", "7700900001"),
    ],
)
def test_written_numbers_are_stored_as_e164_digits(
    written: str, region: str | None, stored: str
) -> None:
    assert normalize_msisdn(written, region=region) == stored
    assert normalize_sender(written, region=region) == stored


@pytest.mark.parametrize(
    "sender_id", ["BANK Ltd", "BANK-UK", "Info.Line", "My Shop", "1-800-FLOWERS"]
)
@pytest.mark.parametrize("region", [None, "GB", "US"])
def test_alphanumeric_sender_ids_are_kept_as_given(sender_id: str, region: str | None) -> None:
    assert normalize_sender(f"  {sender_id} ", region=region) == sender_id


@pytest.mark.parametrize(
    "written",
    ["abc", "44_7700", "1" * 21, "+", "+ -", "٣٣٣", "4+4", "tel:", "tel:+", "()", "07700 9000x1"],
)
@pytest.mark.parametrize("region", [None, "GB"])
def test_what_is_no_number_is_refused_with_its_field(written: str, region: str | None) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalize_msisdn(written, "to", region=region)
    assert refused.value.field == "to"


@pytest.mark.parametrize("missing", [None, "", "   ", "\u00a0"])
def test_a_missing_number_is_a_missing_parameter(missing: str | None) -> None:
    for normalize, field in ((normalize_msisdn, "to"), (normalize_sender, "from")):
        with pytest.raises(MissingParameter) as refused:
            normalize(missing, field, region="GB")
        assert refused.value.field == field


def test_bare_international_digits_are_read_without_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ingest's hot path: what Kannel and SMPP deliver never reaches phonenumbers."""

    def parsing(*args: object) -> str | None:
        raise AssertionError("parsed")

    normalize_msisdn("07700900001", region="GB")  # the region's prefixes, looked up once
    monkeypatch.setattr(numbers, "_in_region", parsing)
    for region in (None, "", "GB", "RU", "US"):
        assert normalize_msisdn(ALICE, "to", region=region) == ALICE
        assert normalize_sender(SENDER, "from", region=region) == SENDER
        assert normalize_msisdn("+" + ALICE, "to", region=region) == ALICE
        assert normalize_sender("BANK", "from", region=region) == "BANK"


@pytest.mark.parametrize(
    ("given", "region"), [("GB", "GB"), (" gb ", "GB"), ("", None), (None, None)]
)
def test_regions_are_country_codes(given: str | None, region: str | None) -> None:
    assert validate_region(given) == region


@pytest.mark.parametrize("given", ["XX", "UK", "GBR", "001", "G"])
def test_an_unknown_region_is_refused(given: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        validate_region(given)
    assert refused.value.field == "region"


# --- properties over every region's example mobile number ------------------------------------

REGIONS = sorted(
    region
    for region in phonenumbers.SUPPORTED_REGIONS
    if phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE) is not None
)


def written_forms(region: str) -> tuple[str, list[str]]:
    """The region's example mobile number as stored, and the ways it is written."""
    example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
    assert example is not None
    e164 = phonenumbers.format_number(example, PhoneNumberFormat.E164)
    digits = e164[1:]
    national = phonenumbers.format_number(example, PhoneNumberFormat.NATIONAL)
    forms = [
        e164,
        phonenumbers.format_number(example, PhoneNumberFormat.INTERNATIONAL),
        "00" + digits,
        phonenumbers.format_number(example, PhoneNumberFormat.RFC3966),
        digits,
    ]
    # Where a national number is written as bare digits without a 0 (Bolivia's 71234567),
    # it cannot be told from an international number: bare digits are kept as written.
    if not (national.isdigit() and not national.startswith("0")):
        forms.append(national)
    return digits, forms


@settings(max_examples=300, deadline=None)
@given(region=st.sampled_from(REGIONS))
def test_every_written_form_of_a_regions_number_is_one_stored_number(region: str) -> None:
    digits, forms = written_forms(region)
    for form in forms:
        assert normalize_msisdn(form, region=region) == digits, form
        assert normalize_sender(form, region=region) == digits, form


SEPARATORS = st.sampled_from([" ", "\u00a0", "-", ".", "/", "\u2013"])


@settings(max_examples=200, deadline=None)
@given(
    region=st.sampled_from(REGIONS),
    reader=st.sampled_from([None, "GB", "US", "DE", "AU"]),
    cuts=st.lists(st.tuples(st.integers(0, 20), SEPARATORS), max_size=4),
)
def test_separators_anywhere_in_an_international_number_change_nothing(
    region: str, reader: str | None, cuts: list[tuple[int, str]]
) -> None:
    digits, _ = written_forms(region)
    written = digits
    for position, separator in sorted(cuts, reverse=True):
        written = written[: min(position, len(written))] + separator + written[position:]
    for prefix in ("+", "00"):
        assert normalize_msisdn(prefix + written, region=reader) == digits, prefix + written


# --- routing: written forms reach the account that owns the number ---------------------------


@pytest.fixture
def gb_settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, reply_window=3600, default_region="GB")


@pytest.fixture
async def gb_services(gb_settings: Settings) -> AsyncIterator[Services]:
    """Services of a server whose default region is GB."""
    built = Services.build(gb_settings)
    await built.start()
    try:
        yield built
    finally:
        await built.close()


async def test_a_message_to_00_and_the_number_reaches_its_owner(services: Services) -> None:
    account = await services.accounts.add("alice", "pw", msisdns=(ALICE,))
    for recipient in ("00447700900001", "+44 7700 900001", "0044 7700-900001"):
        raw = RawInbound("0044 7700 900123", recipient, text=b"hi")
        result = await services.ingestor.accept(raw, upstream_id=None)
        assert result.outcome is IngestOutcome.STORED, recipient
        message = await services.store.get_message(account.id, result.id)
        assert message is not None
        assert (message.sender, message.recipient) == (SENDER, ALICE)
    assert await services.store.count_unrouted() == 0


async def test_with_a_default_region_national_forms_route(gb_services: Services) -> None:
    account = await gb_services.accounts.add("alice", "pw", msisdns=("07700 900001",))
    raw = RawInbound("07700 900123", "07700900001", text=b"hi")
    result = await gb_services.ingestor.accept(raw, upstream_id=None)
    assert result.outcome is IngestOutcome.STORED
    message = await gb_services.store.get_message(account.id, result.id)
    assert message is not None
    assert (message.sender, message.recipient, message.counterpart) == (SENDER, ALICE, SENDER)


async def test_a_short_code_sender_is_kept_as_it_came(gb_services: Services) -> None:
    account = await gb_services.accounts.add("alice", "pw", msisdns=(ALICE,))
    result = await gb_services.ingestor.accept(
        RawInbound("81025", ALICE, text=b"code 1234"), upstream_id=None
    )
    message = await gb_services.store.get_message(account.id, result.id)
    assert message is not None and message.sender == "81025"


async def test_smpp_deliveries_are_read_in_the_default_region(gb_services: Services) -> None:
    await gb_services.accounts.add("alice", "pw", msisdns=(ALICE,))
    inbound = SmppInbound(gb_services.store, gb_services.ingestor, reassembly_timeout_s=60)
    bind = await gb_services.store.add_smpp_bind(
        SmppBind("carrier", "127.0.0.1", 2775, "esme", "secret"), token_hash="x" * 64, now=1
    )
    inbound.binds[bind.name] = bind
    pdu = Pdu(
        Command.DELIVER_SM,
        1,
        params={"source_addr": "07700900123", "destination_addr": "07700900001",
                "short_message": b"over smpp"},
    )  # fmt: skip
    assert await inbound.receive("carrier", pdu) is Status.ESME_ROK
    [message] = await gb_services.store.list_recent_messages("alice", 10)
    assert (message.sender, message.recipient, message.text) == (SENDER, ALICE, "over smpp")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(region=st.sampled_from(REGIONS), form=st.integers(0, 5))
async def test_a_message_to_any_written_form_routes_to_the_owner(
    services: Services, region: str, form: int
) -> None:
    """On both engines: ingest in a server whose default region is `region`."""
    digits, forms = written_forms(region)
    written = forms[form % len(forms)]
    if await services.store.get_account("owner") is None:
        await services.accounts.add("owner", "pw")
    if await services.store.find_account_by_number(digits) is None:
        await services.accounts.add_number(digits, "owner")
    owner = await services.store.get_account("owner")
    assert owner is not None
    ingestor = Ingestor(services.store, reply_window_s=3600, max_chars=1600, default_region=region)
    result = await ingestor.accept(RawInbound(SENDER, written, text=b"hi"), upstream_id=None)
    assert result.outcome is IngestOutcome.STORED, written
    message = await services.store.get_message(owner.id, result.id)
    assert message is not None and message.recipient == digits


# --- accounts: their region, their numbers ---------------------------------------------------


async def test_an_accounts_numbers_are_read_in_its_region(services: Services) -> None:
    account = await services.accounts.add("alice", "pw", msisdns=("07700 900001",), region="gb")
    assert account.region == "GB"
    assert await services.accounts.add_number("07700 900002", "alice") == BOB
    [listed] = await services.store.list_accounts()
    assert (listed.msisdns, listed.region) == ((ALICE, BOB), "GB")
    assert await services.accounts.remove_number("07700 900002", owner="alice") == BOB


async def test_without_a_region_a_national_number_is_kept_as_written(
    services: Services,
) -> None:
    await services.accounts.add("alice", "pw")
    assert await services.accounts.add_number("07700 900001", "alice") == "07700900001"


async def test_an_accounts_region_overrides_the_default(gb_services: Services) -> None:
    await gb_services.accounts.add("gb", "pw")
    await gb_services.accounts.add("de", "pw", region="DE")
    assert await gb_services.accounts.add_number("07700 900001", "gb") == ALICE
    assert await gb_services.accounts.add_number("0151 23456789", "de") == "4915123456789"
    # Back to the default region.
    assert await gb_services.accounts.set_region("de", None) is None
    assert await gb_services.accounts.add_number("07700 900002", "de") == BOB


async def test_a_region_is_set_changed_and_refused(services: Services) -> None:
    await services.accounts.add("alice", "pw")
    assert await services.accounts.set_region("alice", "it") == "IT"
    found = await services.store.get_account("alice")
    assert found is not None and found.region == "IT"
    assert await services.accounts.set_region("alice", "") is None
    found = await services.store.get_account("alice")
    assert found is not None and found.region is None
    with pytest.raises(InvalidInput) as refused:
        await services.accounts.set_region("alice", "XX")
    assert refused.value.field == "region"
    with pytest.raises(InvalidInput):
        await services.accounts.add("bob", "pw", region="Britain")
    assert await services.store.get_account("bob") is None
    with pytest.raises(NotFound):
        await services.accounts.set_region("nobody", "GB")
    with pytest.raises(NotFound):
        await services.accounts.add_number(ALICE, "nobody")


async def test_unrouted_messages_are_assigned_by_any_written_form(
    gb_services: Services,
) -> None:
    await gb_services.accounts.add("alice", "pw")
    raw = RawInbound(SENDER, "07700 900001", text=b"waiting")
    assert (await gb_services.ingestor.accept(raw, upstream_id=None)).unrouted
    assert await gb_services.ingestor.assign_unrouted("0044 7700 900001", "alice") == 1
    [message] = await gb_services.store.list_recent_messages("alice", 10)
    assert (message.recipient, message.text) == (ALICE, "waiting")


# --- sign-in and sending ---------------------------------------------------------------------


async def test_sign_in_by_a_national_number_uses_the_default_region(
    gb_services: Services,
) -> None:
    await gb_services.accounts.add("alice", "pw", msisdns=(ALICE,), region="DE")
    _, key = await gb_services.api_keys.create("app")
    token = await gb_services.sessions.login(key, "07700 900001", "pw")
    who = await gb_services.sessions.authenticate(key, token)
    assert (who.username, who.region) == ("alice", "DE")
    session = await gb_services.web_sessions.sign_in("07700 900001", "pw", INTERNAL)
    found = await gb_services.web_sessions.session(session)
    assert found is not None and found.principal is not None
    assert found.principal.username == "alice"


async def test_sending_to_a_national_number_records_its_e164_form(services: Services) -> None:
    await services.accounts.add("alice", "pw", msisdns=(ALICE,), region="GB")
    await services.accounts.add("bob", "pw", msisdns=(BOB,))
    message_id, recipient = await services.send_api.send_single(
        "alice", "pw", recipient="07700 900002", text="hi bob", sender="07700 900001"
    )
    assert recipient == BOB
    [sent] = await services.store.list_recent_messages("alice", 10)
    assert (sent.id, sent.sender, sent.recipient) == (message_id, ALICE, BOB)
    [received] = await services.store.list_recent_messages("bob", 10)
    assert (received.sender, received.recipient, received.text) == (ALICE, BOB, "hi bob")
    await services.send_api.send_batch(
        "alice", "pw", recipients=["07700 900002", "0033 6 12 34 56 78"], text="to all"
    )
    sent_to = {m.recipient for m in await services.store.list_recent_messages("alice", 10)
               if m.text == "to all"}  # fmt: skip
    assert sent_to == {BOB, "33612345678"}


async def test_mysms_sends_and_contacts_read_numbers_in_the_accounts_region(
    services: Services,
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(ALICE,), region="GB")
    _, key = await services.api_keys.create("app")
    who = await services.sessions.authenticate(key, await services.sessions.login(key, ALICE, "pw"))
    assert who.region == "GB"
    await services.mailbox.send(who, "07700 900002", "hi", send_on=None, device_id=None)
    [sent] = await services.store.list_recent_messages("alice", 10)
    assert sent.recipient == BOB
    assert [m.id for m in await services.mailbox.conversation_messages(
        who, "07700 900002", offset=None, limit=None
    )] == [sent.id]  # fmt: skip
    contact = await services.contacts.create(who, "Bob", ["07700 900002", "BANK"])
    assert list(contact.msisdns) == [BOB, "BANK"]
