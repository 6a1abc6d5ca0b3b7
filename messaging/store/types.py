"""What goes into the store and what comes out of it: the input and worker types,
the notifications to publish after commit, and ``StoreChanges``, which collects
a transaction's transitions and events for the ORM paths.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from messaging.models import Event, Message, StateTransition
from sms.splitting import SplitResult

# --- what goes in --------------------------------------------------------------


def storable_text(value: str) -> str:
    """Text as both databases can hold it: PostgreSQL's text cannot hold NUL,
    which becomes U+FFFD (the replacement character)."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


@dataclass
class NewMessage:
    """A validated send request, ready to be stored."""

    dst: str
    text: str
    split: SplitResult
    src: str = ""
    src_ton: int = 0
    src_npi: int = 0
    dst_ton: int = 0
    dst_npi: int = 0
    requested_encoding: str = "auto"
    register: str = ""
    priority: int = 0
    schedule_at: datetime | None = None
    validity_until: datetime | None = None
    reference: str = ""
    callback_url: str = ""
    idempotency_key: str | None = None
    request_hash: str = ""
    api_key_id: int | None = None
    # The channel of the server process whose request waits for the SMSC's answer.
    notify_channel: str = ""
    connector: str = ""  # the SMSC connector to send it through ("": the default one)


@dataclass(frozen=True)
class ClaimedPart:
    """Everything the worker needs to build one submit_sm, read in one query."""

    part_id: int
    message_id: int
    index: int
    src: str
    src_ton: int
    src_npi: int
    dst: str
    dst_ton: int
    dst_npi: int
    data_coding: int
    esm_class: int
    short_message: bytes
    sar: tuple[int, int, int] | None
    use_payload: bool
    register: str
    priority: int
    validity_until: datetime | None
    attempts: int
    waited: bool = False  # an API request waits for the SMSC's answer to its message


@dataclass(frozen=True)
class SubmitOutcome:
    """What became of one submit_sm."""

    SUBMITTED = "submitted"  # the SMSC accepted it (status 0)
    FAILED = "failed"  # the SMSC refused it for good
    RETRY = "retry"  # refused for now (throttled, queue full...): try again later
    UNKNOWN = "unknown"  # no answer (timeout, lost link): requeue, maybe duplicated
    UNSENT = "unsent"  # claimed but never sent (the link went first): requeue as it was

    part_id: int
    outcome: str
    command_status: int | None = None
    smsc_id: str = ""
    bind_id: str = ""
    sequence: int | None = None
    retry_at: datetime | None = None
    detail: str = ""
    message_id: int | None = None  # the part's message, when the caller knows it


@dataclass(frozen=True)
class ReceiptIn:
    """A delivery receipt as the worker read it off the wire (already parsed)."""

    smsc_id: str  # as the SMSC gave it (stored so)
    match_keys: tuple[str, ...]  # smpp.smsc_ids.match_keys(smsc_id): its own first
    stat: str
    message_state: int | None
    error_code: int | None
    submitted_date: datetime | None
    done_date: datetime | None
    source_addr: str
    destination_addr: str
    raw_text: str
    tlvs: dict


@dataclass(frozen=True)
class FragmentIn:
    """One deliver_sm of an incoming message (UDH already stripped)."""

    src: str
    dst: str
    data_coding: int
    payload: bytes
    reference: int | None = None
    total: int = 1
    seq: int = 1


# --- what comes out ------------------------------------------------------------


# What a request waiting on /v1/send is told: (message id, its state, its
# command_status, its parts' SMSC ids in order). Lists and scalars only: it
# crosses the channel layer as it is.
SmscAnswer = tuple[int, str, int | None, list[str | None]]


@dataclass
class Notifications:
    """Bells to ring after commit."""

    last_event_id: int | None = None
    # channel name -> the answers of the messages whose wait is over
    waiters: dict[str, list[SmscAnswer]] = field(default_factory=lambda: defaultdict(list))

    def merge(self, other: Notifications) -> None:
        if other.last_event_id is not None:
            self.last_event_id = max(self.last_event_id or 0, other.last_event_id)
        for channel, answers in other.waiters.items():
            self.waiters[channel].extend(answers)


class StoreChanges:
    """Collects transitions and events during one transaction, then writes them in bulk."""

    def __init__(self) -> None:
        self.now = timezone.now()
        self.transitions: list[StateTransition] = []
        self.events: list[Event] = []
        self.notifications = Notifications()

    def transition(self, message: Message, new_state: str, command_status=None, detail=""):
        self.transitions.append(
            StateTransition(
                message_id=message.pk,
                from_state=message.state,
                to_state=new_state,
                command_status=command_status,
                detail=detail[:200],
                at=self.now,
            )
        )

    def event(self, type_: str, payload: dict, message_id: int | None = None) -> None:
        self.events.append(
            Event(type=type_, payload=payload, message_id=message_id, created_at=self.now)
        )

    def flush(self) -> Notifications:
        if self.transitions:
            StateTransition.objects.bulk_create(self.transitions)
        if self.events:
            created = Event.objects.bulk_create(self.events)
            ids = [e.pk for e in created if e.pk is not None]
            if ids:
                self.notifications.last_event_id = max(ids)
            else:  # a backend that does not return ids: ask
                self.notifications.last_event_id = (
                    Event.objects.order_by("-id").values_list("id", flat=True).first()
                )
        return self.notifications
