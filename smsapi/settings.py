"""Settings for the SMS API service, read from the environment.

Every knob an operator may turn is an environment variable documented in the
README; nothing secret lives in this file. One file (over 400 lines) on purpose:
an operator looking for a setting reads it top to bottom, in the README's order.
"""

import importlib.util
import os
import secrets
import warnings
from pathlib import Path

import dj_database_url
from corsheaders.defaults import default_headers
from django.core.exceptions import ImproperlyConfigured

from smsapi.logging import default_format as default_log_format

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SMSAPI_DATA_DIR", BASE_DIR / "data"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


DEBUG = env_bool("DEBUG")
# Without SECRET_KEY a random key is made per process: fine for the demo, but
# sessions (the admin login) then do not survive a restart or span processes.
SECRET_KEY = os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50)
# The Host names the server answers to. Unset: the loopback names only, so a
# server exposed by mistake does not answer a DNS-rebinding page; set it (or "*")
# for any other name. Checked for the pages by Django and for /v1 by
# smsapi.middleware.ApiErrorsMiddleware (/healthz, /readyz, /metrics answer any).
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / Redoc assets, served locally
    "channels",
    "messaging",
    "smpp_gateway",
    "smsapi",  # the project: its `serve` command runs the whole service
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",  # before CommonMiddleware, as its docs say
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# The API's chain (/v1/..., /healthz, /readyz, /metrics; see smsapi/handlers.py):
# only natively async middleware, so a request never waits for a shared thread.
API_MIDDLEWARE = [
    "corsheaders.middleware.CorsMiddleware",
    # JSON errors (404, 405, 413, 500, 503 on a database outage), the Host check, nosniff.
    "smsapi.middleware.ApiErrorsMiddleware",
]
# Bodies over this many bytes get 413 before anything reads them (the API's paths;
# DATA_UPLOAD_MAX_MEMORY_SIZE, Django's 2.5 MB, still bounds form fields).
HTTP_MAX_BODY_SIZE = env_int("HTTP_MAX_BODY_SIZE", 10 * 1024 * 1024)

ROOT_URLCONF = "smsapi.urls"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "smsapi.asgi.application"

# --- Database -------------------------------------------------------------
# DATABASE_URL selects the store; the default is a SQLite file in WAL mode so
# the HTTP server and the worker can read while the other writes.
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'smsapi.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's backend, with this process's writers taking turns in arrival order
    # (SQLite's own busy handler lets a newcomer in ahead of one that has waited).
    DATABASES["default"]["ENGINE"] = "smsapi.sqlite_backend"
    DATABASES["default"]["OPTIONS"] = {
        # busy_timeout: how long a writer waits for the lock held by another process
        # (a manage.py command, a second server), SQLITE_BUSY_TIMEOUT seconds.
        "init_command": (
            "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;"
            f"PRAGMA busy_timeout={round(env_float('SQLITE_BUSY_TIMEOUT', 10.0) * 1000)};"
        ),
        # Writers take the lock at BEGIN, so two writers queue on busy_timeout
        # instead of failing with "database is locked" on lock upgrade.
        "transaction_mode": "IMMEDIATE",
        # How long a writer of this process waits for its turn (smsapi/sqlite_backend);
        # then at most busy_timeout for writers of other processes. Past it the
        # API answers 503. Not shorter by default: under a burst of batches turns
        # queue for seconds, and refusing them would turn a slow answer into a retry.
        "timeout": env_float("SQLITE_WRITE_TIMEOUT", 20.0),
    }
    DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ.get(
        # A file (the tests' server and worker processes open it too), one per run.
        "SQLITE_TEST_NAME",
        str(DATA_DIR / f"test-{os.getpid()}.sqlite3"),
    )

if DATABASES["default"]["ENGINE"].endswith("postgresql") and env_bool(
    "DB_POOL", importlib.util.find_spec("psycopg_pool") is not None
):
    # Under ASGI a request may not keep its connection (CONN_MAX_AGE = 0): without a
    # pool every request would open one, a few ms and a server process each.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("DB_POOL_SIZE", 10),  # per process
        # How long a request waits for a connection: with the database down, the
        # time before the API answers 503 (psycopg_pool's PoolTimeout).
        "timeout": env_float("DB_POOL_TIMEOUT", 2.0),
    }
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # libpq's connect_timeout (whole seconds, at least 2): a host that drops packets
    # fails a connection attempt after this, instead of the OS's minutes.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DB_CONNECT_TIMEOUT", 3)
    )
# PostgreSQL statement_timeout of the server processes (the ASGI application, see
# smsapi/asgi.py), in seconds; 0: none. The worker, the webhook sender and the
# management commands (migrate rebuilds indexes for minutes) keep no timeout.
DB_STATEMENT_TIMEOUT = env_float("DB_STATEMENT_TIMEOUT", 30.0)
# Retry-After of the API's 503 while the store is unavailable.
STORE_UNAVAILABLE_RETRY_AFTER = env_int("STORE_UNAVAILABLE_RETRY_AFTER", 2)

if os.environ.get("SMSAPI_TEST_DB_NAME"):  # lets two test runs share one PostgreSQL
    DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ["SMSAPI_TEST_DB_NAME"]

# --- supervision limits ---
# Address of `make run` / `manage.py serve`: loopback unless told otherwise (the
# demo is open; 0.0.0.0 exposes it, see smsapi/startup_checks.py). Docker sets 0.0.0.0.
HTTP_HOST = os.environ.get("HTTP_HOST", "127.0.0.1")
# /readyz waits at most this long for the store, then answers 503 (messaging/health.py).
READINESS_TIMEOUT = env_float("READINESS_TIMEOUT", 0.8)
# Test only: the process also runs a task that raises once this file exists, so the
# test suite can watch supervision at work (messaging/supervision.py). Empty: off.
SMSAPI_TEST_TASK_DEATH_FILE = os.environ.get("SMSAPI_TEST_TASK_DEATH_FILE", "")

# --- webhooks limits ---
# Webhooks may go to loopback, private, link-local... addresses (development and
# tests only): off, such a destination is refused at acceptance and connect time.
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)

# --- streams limits ---
# A stream whose client has read nothing (its send buffer stays above the high-water
# mark) for this long is disconnected (SSE and both WebSockets).
STREAM_STALL_TIMEOUT = env_float("STREAM_STALL_TIMEOUT", 60.0)
# JSON-RPC calls running at once on one socket; past it the socket is not read.
JSONRPC_MAX_IN_FLIGHT = env_int("JSONRPC_MAX_IN_FLIGHT", 32)
# Largest JSON-RPC frame read (bytes); a larger one gets an error answer.
JSONRPC_MAX_FRAME_BYTES = env_int("JSONRPC_MAX_FRAME_BYTES", 65536)
# Seconds between checks that the keys of open sockets and streams are still valid.
KEY_RECHECK_INTERVAL = env_float("KEY_RECHECK_INTERVAL", 5.0)

# --- API edge limits ---
# How far ahead `schedule` and `validity` may lie, in seconds (messaging/api/send_times.py;
# never more than 50 years, what SMPP's relative time and every store can hold).
SMS_MAX_SCHEDULE_AHEAD = env_float("SMS_MAX_SCHEDULE_AHEAD", 365 * 86400.0)
SMS_MAX_VALIDITY = env_float("SMS_MAX_VALIDITY", 365 * 86400.0)
# Deepest nesting of a JSON body or JSON-RPC frame (messaging/api/json_input.py).
JSON_MAX_DEPTH = env_int("JSON_MAX_DEPTH", 32)

# --- SMSC limits ---
# Octets of answers waiting in the worker's write buffer for an SMSC that does not
# read; past it the link is dropped (smpp/session.py).
SMPP_WRITE_BUFFER_LIMIT = env_int("SMPP_WRITE_BUFFER_LIMIT", 1024 * 1024)
# Requests a second the SMSC may send besides deliver_sm (enquire_link, unknown
# commands), two seconds' worth in a burst; past it the link is reset. 0: no limit.
SMPP_PEER_REQUEST_RATE = env_float("SMPP_PEER_REQUEST_RATE", 200.0)
# deliver_sm read and not yet answered; past it the worker stops reading the link.
SMPP_MAX_UNANSWERED_DELIVERS = env_int("SMPP_MAX_UNANSWERED_DELIVERS", 5000)

# --- link habits limits ---
# Seconds a session may refuse every submit (0x14, 0x58, 0x08, no answer) before it
# is reported stalled (/readyz 503, an ERROR line) and bound again; 0: never.
SMPP_STALL_REBIND_AFTER = env_float("SMPP_STALL_REBIND_AFTER", 60.0)

# --- dashboard and admin display (issue 21) ---
# The admin shows times to the microsecond (smsapi/formats/en/formats.py): the order of
# one message's events, milliseconds apart, must be visible.
FORMAT_MODULE_PATH = ["smsapi.formats"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer ----------------------------------------------------------
# The layer only rings a bell: every event is in the database first.
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py's default 5 s read timeout would kill idle listeners
            # (channels_redis #422): consumers wait on the layer for longer.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
                "capacity": 1000,
                "expiry": 30,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Cache -------------------------------------------------------------------
# Per-key rate limits count here: Redis makes one limit for every server process.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "smsapi",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- SMPP -------------------------------------------------------------------
SMPP_ADDR = os.environ.get("SMPP_ADDR", "")  # empty: `make run` starts the simulator
SMPP_USER = os.environ.get("SMPP_USER", "smsapi")
SMPP_PASSWD = os.environ.get("SMPP_PASSWD", "secret")
SMPP_SYSTEM_TYPE = os.environ.get("SMPP_SYSTEM_TYPE", "")
SMPP_TLS = env_bool("SMPP_TLS")
SMPP_TLS_INSECURE = env_bool("SMPP_TLS_INSECURE")  # skip certificate checks (testing only)
SMPP_TLS_CA = os.environ.get("SMPP_TLS_CA", "")
SMPP_WINDOW = env_int("SMPP_WINDOW", 100)  # submits in flight
SMPP_RESPONSE_TIMEOUT = env_float("SMPP_RESPONSE_TIMEOUT", 10.0)
SMPP_ENQUIRE_LINK_INTERVAL = env_float("SMPP_ENQUIRE_LINK_INTERVAL", 10.0)
SMPP_LINK_TIMEOUT = env_float("SMPP_LINK_TIMEOUT", 30.0)  # silence after which the link is dead
# How long a claimed part belongs to its worker; past it, another worker takes it up
# (marked possibly duplicated). Must exceed SMPP_RESPONSE_TIMEOUT by a good margin.
SMPP_LEASE_SECONDS = env_float("SMPP_LEASE_SECONDS", 3 * SMPP_RESPONSE_TIMEOUT + 30)
SMPP_RECONNECT_DELAYS = [
    float(d) for d in os.environ.get("SMPP_RECONNECT_DELAYS", "1,2,5,10,20,30").split(",")
]
# What data_coding 0 (the SMSC default alphabet) means on this SMSC: "gsm7" or "latin1".
SMPP_DEFAULT_ALPHABET = os.environ.get("SMPP_DEFAULT_ALPHABET", "gsm7")
# How the SMSC writes a message's id in submit_sm_resp and in its receipt (Kannel's
# msg-id-type): "auto" (digits read in both bases), "same", "hex_response" (hex there,
# decimal in the receipt) or "hex_receipt". smpp.smsc_ids.IdStyle; docs/routing.md.
SMPP_SMSC_ID_STYLE = os.environ.get("SMPP_SMSC_ID_STYLE", "auto")
# How long messages are carried: "udh" (8-bit ref), "udh16", "sar" or "payload".
SMPP_CONCAT = os.environ.get("SMPP_CONCAT", "udh")
SMPP_QUERY_SM = env_bool("SMPP_QUERY_SM", True)  # /v1/query asks the SMSC when no receipt yet
SMPP_QUERY_TIMEOUT = env_float("SMPP_QUERY_TIMEOUT", 2.0)
SMPP_MAX_RATE = env_float("SMPP_MAX_RATE", 0.0)  # submit_sm per second for this bind; 0: no limit
SMPP_MAX_ATTEMPTS = env_int("SMPP_MAX_ATTEMPTS", 10)  # tries of one part before it fails
# The SMPP_* settings are the default connector (docs/routing.md); off: only stored ones.
SMPP_DEFAULT_CONNECTOR = env_bool("SMPP_DEFAULT_CONNECTOR", True)
# Sessions the default connector holds at once, shared between the workers; 0: one per
# worker process, as before connectors existed (each worker binds it once).
SMPP_BINDS = env_int("SMPP_BINDS", 0)
# A connector down (or refusing) this long: its queued messages move to the next one.
SMPP_FAILOVER_AFTER = env_float("SMPP_FAILOVER_AFTER", 30.0)
# Seconds between two reads of the stored connectors by the worker(s).
SMPP_CONNECTOR_RELOAD = env_float("SMPP_CONNECTOR_RELOAD", 2.0)

# --- Sending ----------------------------------------------------------------
SMS_MAX_PARTS = env_int("SMS_MAX_PARTS", 10)
SMS_SEND_WAIT = env_float("SMS_SEND_WAIT", 5.0)  # seconds /v1/send waits for the SMSC
SMS_BATCH_MAX = env_int("SMS_BATCH_MAX", 1000)
SMS_DEFAULT_REGISTER = os.environ.get("SMS_DEFAULT_REGISTER", "final")
SMS_INCOMING_REASSEMBLY_TIMEOUT = env_float("SMS_INCOMING_REASSEMBLY_TIMEOUT", 60.0)
SMSAPI_PREFIX = os.environ.get("SMSAPI_PREFIX", "").strip("/")

HTTP_PORT = env_int("HTTP_PORT", 8080)

# --- Event streams (SSE and the events WebSocket) ---------------------------
SSE_KEEPALIVE = env_float("SSE_KEEPALIVE", 15.0)  # seconds between keep-alive comments
EVENTS_ACK_TIMEOUT = env_float("EVENTS_ACK_TIMEOUT", 30.0)  # events socket: wait for an answer
EVENTS_POLL_INTERVAL = env_float("EVENTS_POLL_INTERVAL", 1.0)  # store read when no bell rings
# PostgreSQL can make an event id visible after a higher one: how long a gap is waited for.
EVENTS_GAP_GRACE = env_float("EVENTS_GAP_GRACE", 2.0)

# --- Webhooks (messaging.webhooks.delivery) -------------------------------------------
# Incoming messages (MO) are also POSTed here (besides the keys' default URLs).
WEBHOOK_INCOMING_URL = os.environ.get("WEBHOOK_INCOMING_URL", "")
# Signs webhooks of messages sent without an API key (and to WEBHOOK_INCOMING_URL).
WEBHOOK_SECRET = os.environ.get("WEBHOOK_SECRET", "")
WEBHOOK_TIMEOUT = env_float("WEBHOOK_TIMEOUT", 10.0)  # seconds per POST
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8)
# Seconds before the 2nd, 3rd... try; the last one repeats.
WEBHOOK_BACKOFF = [
    float(d) for d in os.environ.get("WEBHOOK_BACKOFF", "10,30,120,600,3600,10800,21600").split(",")
]
WEBHOOK_CONCURRENCY = env_int("WEBHOOK_CONCURRENCY", 20)  # POSTs in flight per sender
WEBHOOK_POLL_INTERVAL = env_float("WEBHOOK_POLL_INTERVAL", 1.0)  # store read when no bell rings

# --- HTTPS (manage.py serve) -------------------------------------------------
HTTPS_PORT = env_int("HTTPS_PORT", 8443)
HTTPS_CERT = os.environ.get("HTTPS_CERT", "")  # PEM certificate (chain) of the server
HTTPS_KEY = os.environ.get("HTTPS_KEY", "")  # PEM private key of the server
HTTPS_CLIENT_CA = os.environ.get("HTTPS_CLIENT_CA", "")  # set: clients need a cert from this CA

# --- HTTP -------------------------------------------------------------------
# API keys (messaging.api_keys): "required" for the API, the sockets and the
# streams, or "off" (the demo default: no keys, everyone sees everything).
SMSAPI_AUTH = (os.environ.get("SMSAPI_AUTH") or "off").strip().lower()
if SMSAPI_AUTH not in ("required", "off"):
    raise ImproperlyConfigured(f'SMSAPI_AUTH="{SMSAPI_AUTH}": "required" or "off" expected')

# CORS (django-cors-headers): "*" allows every origin, else a comma-separated list
# of origins. Never with credentials: keys travel in a header the page sets
# itself, not in cookies. Unset: "*" when keys are required (a page must still
# hold a key), else only pages served from a loopback address: with auth off,
# "*" would let any web site that a user of the host visits read the API.
_cors_default = "*" if SMSAPI_AUTH == "required" else ""
_cors_origins = [
    o.strip() for o in os.environ.get("CORS_ALLOWED_ORIGINS", _cors_default).split(",") if o.strip()
]
CORS_ALLOW_ALL_ORIGINS = _cors_origins == ["*"]
CORS_ALLOWED_ORIGINS = [] if CORS_ALLOW_ALL_ORIGINS else _cors_origins
if "CORS_ALLOWED_ORIGINS" not in os.environ and not CORS_ALLOW_ALL_ORIGINS:
    CORS_ALLOWED_ORIGIN_REGEXES = [r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$"]
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = (*default_headers, "idempotency-key", "last-event-id")
CORS_EXPOSE_HEADERS = ["Retry-After", "WWW-Authenticate"]

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "messaging.api.content_negotiation.UsualAcceptNegotiation",
    # DRF's, with bounded size and depth and strict decoding (messaging/api/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "messaging.api.parsers.JSONParser",
        "messaging.api.parsers.FormParser",
        "messaging.api.parsers.MultiPartParser",
    ],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "messaging.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "SMS API",
    "DESCRIPTION": "Send SMS over SMPP and follow their delivery (see docs/api.md).",
    "VERSION": "1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_INCLUDE_SCHEMA": False,
}
# Admin logins (messaging/admin/login_throttle.py): after this many failures within
# ADMIN_LOGIN_LOCKOUT seconds, from one client address or for one username, that
# address or username is refused until the window has passed.
ADMIN_LOGIN_MAX_FAILURES = env_int("ADMIN_LOGIN_MAX_FAILURES", 5)
ADMIN_LOGIN_LOCKOUT = env_int("ADMIN_LOGIN_LOCKOUT", 900)

# /readyz: a worker whose heartbeat is older than this no longer counts as bound.
HEALTH_HEARTBEAT_MAX_AGE = env_float("HEALTH_HEARTBEAT_MAX_AGE", 15.0)

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or DATA_DIR / "static")  # for collectstatic
STATICFILES_DIRS = [BASE_DIR / "static"]
# WhiteNoise serves static files in production; with finders it needs no collectstatic.
WHITENOISE_USE_FINDERS = True
warnings.filterwarnings("ignore", message="No directory at")  # WhiteNoise: no STATIC_ROOT yet

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

AUTH_PASSWORD_VALIDATORS = []

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
# "json" (one object a line) or "text"; by default JSON unless stderr is a terminal.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "").strip().lower() or default_log_format()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "smsapi.logging.JsonFormatter"},
        "text": {"()": "smsapi.logging.TextFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "text" if LOG_FORMAT == "text" else "json",
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "smpplib": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # ... but where a server listens is said at start ("Listening on TCP address ...").
        "daphne.server": {"level": "INFO"},
        "django.channels.server": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},  # a line per webhook POST: ours say more
    },
}
