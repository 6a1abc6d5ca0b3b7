"""The Django admin as the message log: read-only lists and pages over the store.

Nothing here edits a record: a message, its parts, receipts and timeline are
what happened, and changing them by hand would make them lie. The only writes
are the two operator actions, which go through ``messaging.operator_actions``
and so through the state machine, with a transition and an event each. API keys (``keys``)
and the SMSC connectors and routes (``connectors``) are what an operator edits.

Django's admin autodiscovery imports this package; the modules below register
their pages.
"""

from django.contrib import admin

from messaging.admin import (  # noqa: F401  (they register pages)
    connectors,
    keys,
    messages,
    webhooks,
)
from messaging.admin.login_throttle import ThrottledAdminAuthenticationForm

admin.site.site_header = "SMS API"
admin.site.site_title = "SMS API admin"
admin.site.index_title = "Message log"
# Failed logins are counted per client address and username (login_throttle).
admin.site.login_form = ThrottledAdminAuthenticationForm
