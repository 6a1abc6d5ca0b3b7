"""The service's settings with ``bench.ceiling_urls`` as its URLconf (``bench/ceiling.py``)."""

from smsapi.settings import *  # noqa: F403 - the service's settings, one setting changed

ROOT_URLCONF = "bench.ceiling_urls"
