"""How the admin shows dates and times (FORMAT_MODULE_PATH): to the microsecond.

Events of one message are often milliseconds apart (submit, submit_sm_resp,
receipt): Django's "en" default (``N j, Y, P``) shows only the minute, which
hides their order. Times are in TIME_ZONE (UTC).
"""

DATETIME_FORMAT = "Y-m-d H:i:s.u"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s.u"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s.u"
