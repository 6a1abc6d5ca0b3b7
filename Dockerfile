# One image for the processes of a distributed deployment:
#   server     daphne smsapi.asgi:application            (the default command)
#   worker     python manage.py smpp_worker
#   webhooks   python manage.py webhook_sender
#   simulator  python manage.py smsc_simulator --host 0.0.0.0 --port 2775
# See docs/operations.md and docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
# Every runtime dependency ships wheels for this platform (psycopg[binary]
# included), so no compiler is needed.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Static files (admin, API docs, dashboard) collected at build time, outside the
# data directory so a volume mounted there does not hide them. The key only lets
# settings load: collectstatic signs nothing.
# A container must listen on every interface to be reachable through its port
# mapping: HTTP_HOST=0.0.0.0 (for `manage.py serve`; daphne's -b below says the same).
ENV STATIC_ROOT=/app/staticfiles \
    SMSAPI_DATA_DIR=/app/data \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8080
RUN SECRET_KEY=collectstatic-only-not-a-secret python manage.py collectstatic --noinput -v 0

# An unprivileged user; the data directory (SQLite store, worker lock) is its own.
RUN useradd --system --uid 10001 --home-dir /app --no-create-home smsapi \
    && mkdir -p /app/data \
    && chown smsapi:smsapi /app/data
USER smsapi

EXPOSE 8080 2775

# Liveness of the HTTP server (the worker and simulator services turn it off).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HTTP_PORT', '8080'), timeout=4)"]

# The worker and the webhook sender exit non-zero (70) when a task of theirs dies:
# run them under a restart policy (compose: restart: unless-stopped).
CMD ["daphne", "-b", "0.0.0.0", "-p", "8080", "smsapi.asgi:application"]
