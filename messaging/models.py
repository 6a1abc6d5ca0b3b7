"""The message store: the record of truth for everything the gateway does."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from messaging.states import State
from smpp.smsc_ids import SMSC_ID_MAX_LENGTH, IdStyle
from sms.encoding import DEFAULT_ALPHABETS


class ApiKey(models.Model):
    """A client's credential. Only a hash of the key is kept; the key is shown once."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True)  # shown, to tell keys apart
    key_hash = models.CharField(max_length=64, unique=True)  # sha256 of the whole key
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    rate_limit = models.PositiveIntegerField(default=0)  # requests a minute; 0: no limit
    default_callback_url = models.URLField(max_length=500, blank=True, default="")
    # Shared secret for signing webhooks (HMAC-SHA256); it must be readable to sign.
    webhook_secret = models.CharField(max_length=64, blank=True, default="")
    receive_incoming = models.BooleanField(default=True)  # sees mobile-originated messages
    # May create, change and remove connectors and routes (/v1/connectors, /v1/routes).
    manage_connectors = models.BooleanField(default=False)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class Message(models.Model):
    """One message a client asked us to send; carried by one or more parts."""

    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.PROTECT, related_name="messages"
    )
    src = models.CharField(max_length=21, blank=True, default="")
    src_ton = models.PositiveSmallIntegerField(default=0)
    src_npi = models.PositiveSmallIntegerField(default=0)
    dst = models.CharField(max_length=21)
    dst_ton = models.PositiveSmallIntegerField(default=0)
    dst_npi = models.PositiveSmallIntegerField(default=0)
    text = models.TextField()
    encoding = models.CharField(max_length=8)  # resolved: gsm7, ucs2, latin1, raw
    requested_encoding = models.CharField(max_length=8, default="auto")
    data_coding = models.PositiveSmallIntegerField(default=0)
    ucs2_forced_by = models.CharField(max_length=64, blank=True, default="")
    parts_count = models.PositiveSmallIntegerField(default=1)
    register = models.CharField(max_length=8, blank=True, default="")  # "", final, failure
    priority = models.PositiveSmallIntegerField(default=0)
    schedule_at = models.DateTimeField(null=True, blank=True)
    validity_until = models.DateTimeField(null=True, blank=True)
    reference = models.CharField(max_length=128, blank=True, default="")
    callback_url = models.URLField(max_length=500, blank=True, default="")
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    request_hash = models.CharField(max_length=64, blank=True, default="")
    # The SMSC connector it is to go through; "" is the default one (the SMPP_* settings).
    connector = models.CharField(max_length=64, blank=True, default="")

    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    command_status = models.PositiveIntegerField(null=True, blank=True)  # first failing part's
    error_code = models.PositiveIntegerField(null=True, blank=True)  # network error from receipt
    possibly_duplicated = models.BooleanField(default=False)
    # The reply channel of the API request waiting for the SMSC's answer, if any.
    notify_channel = models.CharField(max_length=200, blank=True, default="")

    created_at = models.DateTimeField(db_index=True)
    updated_at = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)
    final_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        # Every index costs each insert and each change of state (thousands a second):
        # only those a query needs. Plain Index and UniqueConstraint, not db_index or
        # unique=True, which on PostgreSQL add a second (LIKE) index to text columns.
        indexes = [
            models.Index(fields=["state", "created_at"]),
            # The admin's SMSC-error filter and its list of codes. Partial: a message
            # enters it only once failed, not at each insert and change of state.
            models.Index(
                fields=["command_status"],
                name="message_failed_status_idx",
                condition=models.Q(state="failed"),
            ),
            models.Index(fields=["dst"], name="message_dst_idx"),
            models.Index(fields=["reference"], name="message_reference_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["idempotency_key"], name="message_idempotency_key")
        ]

    def __str__(self) -> str:
        return f"message {self.pk} to {self.dst} ({self.state})"


class MessagePart(models.Model):
    """One SMPP submit_sm: the unit the worker sends and the SMSC acknowledges."""

    # Looked up through unique_part_index (message, index): no index of its own.
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="parts", db_index=False
    )
    index = models.PositiveSmallIntegerField()  # 1-based position in the message
    short_message = models.BinaryField()  # exactly the octets put in the PDU, UDH included
    esm_class = models.PositiveSmallIntegerField(default=0)
    sar_ref = models.PositiveIntegerField(null=True, blank=True)
    sar_total = models.PositiveSmallIntegerField(null=True, blank=True)
    sar_seq = models.PositiveSmallIntegerField(null=True, blank=True)
    use_payload = models.BooleanField(default=False)  # carry the text in message_payload

    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    next_attempt_at = models.DateTimeField()  # part_claim_idx
    lease_until = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=64, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    # Sequence numbers only mean something within one bind: keep both.
    bind_id = models.CharField(max_length=64, blank=True, default="")
    # The connector whose SMSC answered its submit: its SMSC id is unique only there,
    # so its receipts are matched within it ("": the default connector).
    connector = models.CharField(max_length=64, blank=True, default="")
    sequence_number = models.PositiveIntegerField(null=True, blank=True)
    smsc_id = models.CharField(max_length=SMSC_ID_MAX_LENGTH, null=True, blank=True)  # as given
    # smpp.smsc_ids.match_key(smsc_id): what receipts are matched by (part_match_key_idx)
    match_key = models.CharField(max_length=SMSC_ID_MAX_LENGTH, null=True, blank=True)
    command_status = models.PositiveIntegerField(null=True, blank=True)
    error_code = models.PositiveIntegerField(null=True, blank=True)
    possibly_duplicated = models.BooleanField(default=False)
    submitted_at = models.DateTimeField(null=True, blank=True)
    final_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["message_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["message", "index"], name="unique_part_index")
        ]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="part_claim_idx"),
            models.Index(fields=["match_key"], name="part_match_key_idx"),
        ]

    def __str__(self) -> str:
        return f"part {self.index}/{self.message.parts_count} of message {self.message_id}"


class Receipt(models.Model):
    """A delivery receipt as it came from the SMSC, matched to its part or not yet."""

    smsc_id = models.CharField(max_length=SMSC_ID_MAX_LENGTH)  # as the SMSC gave it
    match_key = models.CharField(max_length=SMSC_ID_MAX_LENGTH, blank=True, default="")
    connector = models.CharField(max_length=64, blank=True, default="")  # whose SMSC sent it
    part = models.ForeignKey(
        MessagePart, null=True, blank=True, on_delete=models.SET_NULL, related_name="receipts"
    )
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="receipts"
    )
    stat = models.CharField(max_length=16, blank=True, default="")
    message_state = models.PositiveSmallIntegerField(null=True, blank=True)
    error_code = models.PositiveIntegerField(null=True, blank=True)
    submitted_date = models.DateTimeField(null=True, blank=True)
    done_date = models.DateTimeField(null=True, blank=True)
    source_addr = models.CharField(max_length=21, blank=True, default="")  # handset
    destination_addr = models.CharField(max_length=21, blank=True, default="")
    raw_text = models.TextField(blank=True, default="")
    tlvs = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(db_index=True)
    matched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # Receipts that overtook their submit_sm_resp, looked up by match key at
            # each write of results, and counted by the metrics. Partial: a receipt
            # matched as it is stored (nearly all of them) never enters it.
            models.Index(
                fields=["match_key"],
                name="receipt_unmatched_idx",
                condition=models.Q(matched_at__isnull=True),
            ),
            models.Index(fields=["match_key"], name="receipt_match_key_idx"),
            models.Index(fields=["source_addr"], name="receipt_source_addr_idx"),
        ]

    def __str__(self) -> str:
        return f"receipt {self.stat} for {self.smsc_id}"


class IncomingFragment(models.Model):
    """One deliver_sm of a mobile-originated message, kept until it is assembled.

    Stored before the deliver_sm is answered, so a crash never loses a part.
    """

    src = models.CharField(max_length=21)
    dst = models.CharField(max_length=21)
    data_coding = models.PositiveSmallIntegerField(default=0)
    reference = models.PositiveIntegerField(null=True, blank=True)
    total = models.PositiveSmallIntegerField(default=1)
    seq = models.PositiveSmallIntegerField(default=1)
    payload = models.BinaryField()  # user data without the UDH
    received_at = models.DateTimeField()
    # The connector whose SMSC delivered it: parts of one message come through one SMSC.
    connector = models.CharField(max_length=64, blank=True, default="")
    incoming = models.ForeignKey(
        "IncomingMessage", null=True, blank=True, on_delete=models.CASCADE, related_name="fragments"
    )

    class Meta:
        indexes = [models.Index(fields=["incoming", "src", "reference"], name="fragment_open_idx")]

    def __str__(self) -> str:
        return f"fragment {self.seq}/{self.total} from {self.src}"


class IncomingMessage(models.Model):
    """A mobile-originated message, decoded and (when long) reassembled."""

    src = models.CharField(max_length=21, db_index=True)
    dst = models.CharField(max_length=21, db_index=True)
    text = models.TextField(blank=True, default="")
    data_coding = models.PositiveSmallIntegerField(default=0)
    binary_hex = models.TextField(blank=True, default="")  # set when data_coding is binary
    parts_expected = models.PositiveSmallIntegerField(default=1)
    parts_received = models.PositiveSmallIntegerField(default=1)
    complete = models.BooleanField(default=True)
    received_at = models.DateTimeField(db_index=True)
    connector = models.CharField(max_length=64, blank=True, default="")  # whose SMSC sent it

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"incoming message {self.pk} from {self.src}"


class StateTransition(models.Model):
    """The timeline: every change of a message's (or a part's) state, with its time."""

    # No foreign key constraint in the database, here and on Event.message: four
    # transitions and three events per message made 350,000 constraint checks at
    # commit per 50,000 messages (end to end on PostgreSQL: +5 % without them). Both
    # are append-only logs written in the transaction that changes their message, and
    # messages are never deleted; Django still cascades when one is.
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="transitions", db_constraint=False
    )
    part_index = models.PositiveSmallIntegerField(null=True, blank=True)  # null: the message
    from_state = models.CharField(max_length=16, blank=True, default="")
    to_state = models.CharField(max_length=16)
    command_status = models.PositiveIntegerField(null=True, blank=True)
    detail = models.CharField(max_length=200, blank=True, default="")
    at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.from_state or '-'} -> {self.to_state} at {self.at:%Y-%m-%d %H:%M:%S}"


class Event(models.Model):
    """What clients of the SSE and WebSocket streams see, with a rising id.

    Written in the same transaction as the change it describes; the channel
    layer only tells listeners that there is something new to read.
    """

    class Type(models.TextChoices):
        RECEIPT = "receipt"
        MO = "mo"
        STATUS = "status"

    type = models.CharField(max_length=8, choices=Type.choices)
    message = models.ForeignKey(
        Message,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
        db_constraint=False,
    )
    payload = models.JSONField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"event {self.pk} ({self.type})"


class ConcatReference(models.Model):
    """The next concatenation reference per destination, so references in
    flight to one handset never repeat."""

    dst = models.CharField(max_length=21, unique=True)
    next_value = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"next reference for {self.dst}: {self.next_value}"


# --- SMSC connectors and routes (messaging.connectors, messaging.routing) ----------------------


MAX_BINDS = 32
# A connector's name: what routes, messages, metrics and logs call it. "default" is
# the SMPP_* settings' connector (stored as "").
connector_name_validator = RegexValidator(
    r"\A(?!default\Z)[a-z0-9][a-z0-9_-]{0,63}\Z",
    "lower-case letters, digits, '-' and '_', starting with a letter or digit; "
    "not 'default' (the SMPP_* settings' connector)",
)
# SMPP's C-octet strings (system_id, password, system_type) are printable ASCII.
_PRINTABLE_ASCII = RegexValidator(r"\A[\x20-\x7e]*\Z", "printable ASCII characters only")
# A host name, an IPv4 address or an IPv6 one.
_HOST = RegexValidator(r"\A[A-Za-z0-9._:\-]+\Z", "a host name or an IP address")
_VARIABLE_NAME = RegexValidator(
    r"\A[A-Za-z_][A-Za-z0-9_]*\Z", "an environment variable's name (letters, digits, _)"
)
_TON = MaxValueValidator(6)  # SMPP 3.4 5.2.5
_NPI = MaxValueValidator(18)  # SMPP 3.4 5.2.6


class Connector(models.Model):
    """An SMSC the gateway sends through, managed live (admin, /v1/connectors, a command).

    The environment's ``SMPP_*`` settings are one more connector, the default
    (stored name "", shown as "default"), which is not a row. The running
    worker(s) bind every enabled connector within seconds of a change
    (``smpp_gateway.worker.fleet``). The password must be readable to bind; it is
    never shown back (the admin, the API and the command show whether one is set).
    With ``password_variable`` none is stored: each worker reads it from its own
    environment when it binds.
    """

    class BindMode(models.TextChoices):
        TRANSCEIVER = "transceiver"
        TRANSMITTER_RECEIVER = "tx_rx", "transmitter + receiver pair"

    name = models.CharField(max_length=64, unique=True, validators=[connector_name_validator])
    enabled = models.BooleanField(default=True)
    host = models.CharField(max_length=253, validators=[_HOST])
    port = models.PositiveIntegerField(
        default=2775, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    tls = models.BooleanField(default=False)
    tls_insecure = models.BooleanField(default=False)  # skip certificate checks (testing only)
    tls_ca = models.CharField(max_length=500, blank=True, default="")  # PEM file of the CA
    system_id = models.CharField(max_length=15, validators=[_PRINTABLE_ASCII])
    password = models.CharField(max_length=8, blank=True, default="", validators=[_PRINTABLE_ASCII])
    # Set: the password is this environment variable of the worker's (the stored one unused).
    password_variable = models.CharField(
        max_length=64, blank=True, default="", validators=[_VARIABLE_NAME]
    )
    system_type = models.CharField(
        max_length=12, blank=True, default="", validators=[_PRINTABLE_ASCII]
    )
    bind_mode = models.CharField(max_length=16, choices=BindMode.choices, default="transceiver")
    # Sessions (or transmitter + receiver pairs) held at once.
    binds = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(MAX_BINDS)]
    )
    window = models.PositiveIntegerField(  # submits in flight per bind
        default=100, validators=[MinValueValidator(1), MaxValueValidator(10_000)]
    )
    # submit_sm a second per bind; 0: no limit
    max_rate = models.FloatField(default=0.0, validators=[MinValueValidator(0.0)])
    enquire_link_interval = models.FloatField(default=10.0, validators=[MinValueValidator(1.0)])
    response_timeout = models.FloatField(default=10.0, validators=[MinValueValidator(0.5)])
    link_timeout = models.FloatField(default=30.0, validators=[MinValueValidator(1.0)])
    # Addressing this SMSC wants, whatever the message says (null: as the message says).
    source_ton = models.PositiveSmallIntegerField(null=True, blank=True, validators=[_TON])
    source_npi = models.PositiveSmallIntegerField(null=True, blank=True, validators=[_NPI])
    dest_ton = models.PositiveSmallIntegerField(null=True, blank=True, validators=[_TON])
    dest_npi = models.PositiveSmallIntegerField(null=True, blank=True, validators=[_NPI])
    # Down (no bound link) or refusing for this long: its queued messages fail over.
    failover_after = models.FloatField(default=30.0, validators=[MinValueValidator(1.0)])
    # How the SMSC writes a message's id in submit_sm_resp and in its receipt (Kannel's
    # msg-id-type); known, receipts match without reading digits in both bases.
    smsc_id_style = models.CharField(
        max_length=16,
        choices=[(style.value, style.description) for style in IdStyle],
        default=IdStyle.AUTO.value,
    )
    # What data_coding 0 means on this SMSC; "": SMPP_DEFAULT_ALPHABET (the gateway's).
    default_alphabet = models.CharField(
        max_length=8,
        blank=True,
        default="",
        choices=[("", "the gateway's (SMPP_DEFAULT_ALPHABET)")]
        + [(name, name) for name in DEFAULT_ALPHABETS],
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Route(models.Model):
    """One routing rule (``messaging.routing.Route``), tried in ``position`` order.

    Lists are kept as comma-separated text (readable in the admin and the
    command); ``messaging.connectors.route_from_row`` checks a row read back.
    """

    name = models.CharField(max_length=64, unique=True)
    position = models.IntegerField(default=0)
    enabled = models.BooleanField(default=True)
    dst_prefixes = models.CharField(max_length=1000, blank=True, default="")
    dst_pattern = models.CharField(max_length=200, blank=True, default="")
    sources = models.CharField(max_length=1000, blank=True, default="")
    api_keys = models.ManyToManyField(ApiKey, blank=True, related_name="routes")
    connectors = models.CharField(max_length=1000)  # names in order of preference
    weights = models.CharField(max_length=200, blank=True, default="")  # one per connector
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name


class BindClaim(models.Model):
    """Which worker process holds which bind of a connector (several workers on
    PostgreSQL: ``messaging.store.bind_claims``). A claim not renewed before
    ``lease_until`` is free for another worker to take."""

    connector = models.CharField(max_length=64)
    bind_index = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=16)  # transceiver, transmitter, receiver
    owner = models.CharField(max_length=64)  # the holding worker process (fleet id)
    lease_until = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connector", "bind_index", "kind"], name="one_bind_claim"
            )
        ]

    def __str__(self) -> str:
        return f"{self.connector or 'default'} bind {self.bind_index} ({self.kind}): {self.owner}"


class WorkerPresence(models.Model):
    """A worker process that shares the binds, and when it last said so."""

    worker_id = models.CharField(max_length=64, unique=True)
    heartbeat_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.worker_id


class LinkStatus(models.Model):
    """The state of each worker's SMPP bind, for /healthz and the dashboard."""

    worker_id = models.CharField(max_length=64, unique=True)
    state = models.CharField(max_length=16)  # connecting, bound, disconnected, stopped
    detail = models.CharField(max_length=200, blank=True, default="")
    smsc = models.CharField(max_length=200, blank=True, default="")
    connector = models.CharField(max_length=64, blank=True, default="")  # "": the default
    bind_index = models.PositiveSmallIntegerField(default=0)  # which bind of the connector
    changed_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    # How the SMSC treats the worker's submits (messaging.health.LinkHealth), written
    # with the heartbeat; null until the worker's first report.
    health = models.JSONField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "link statuses"

    def __str__(self) -> str:
        return f"{self.worker_id}: {self.state}"


# --- webhooks (messaging.webhooks.delivery) ---------------------------------------------------


class WebhookCursor(models.Model):
    """How far the webhook senders have read the event log: one row, locked while
    deliveries are planned, so several senders never plan an event twice."""

    name = models.CharField(max_length=32, unique=True)
    last_event_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: after event {self.last_event_id}"


class WebhookDelivery(models.Model):
    """One event to POST to one URL, tried until it is answered 2xx or runs out of tries."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="webhook_deliveries")
    # Whose secret signs the body; null: the WEBHOOK_SECRET setting.
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_deliveries"
    )
    url = models.URLField(max_length=500)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    # When it is due; while a sender posts it, the end of that sender's lease.
    next_attempt_at = models.DateTimeField()
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_due_idx")]

    def __str__(self) -> str:
        return f"webhook {self.pk}: event {self.event_id} to {self.url} ({self.state})"


class WebhookAttempt(models.Model):
    """One POST of a delivery and what came of it."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveSmallIntegerField()  # 1 for the first try
    at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)  # null: no answer
    error = models.CharField(max_length=200, blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)
    response_excerpt = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        outcome = self.status_code if self.status_code is not None else self.error or "no answer"
        return f"attempt {self.number} of webhook {self.delivery_id}: {outcome}"
