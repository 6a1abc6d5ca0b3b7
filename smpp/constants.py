"""SMPP 3.4's numbers, named once: command ids, TLV tags, field bits and limits.

The client session, the hand-written codec (``smpp.pdu_fast``) and the
simulator all read PDUs by these numbers; command_status codes have their own
table in ``smpp.command_status``. Section numbers are SMPP v3.4's.
"""

from __future__ import annotations

# --- command_id (5.1.2.1) ---------------------------------------------------------------

RESPONSE_BIT = 0x80000000  # set in every response's command_id
GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_RECEIVER_RESP = 0x80000001
BIND_TRANSMITTER = 0x00000002
BIND_TRANSMITTER_RESP = 0x80000002
QUERY_SM = 0x00000003
QUERY_SM_RESP = 0x80000003
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
BIND_TRANSCEIVER = 0x00000009
BIND_TRANSCEIVER_RESP = 0x80000009
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
DATA_SM = 0x00000103
DATA_SM_RESP = 0x80000103

INTERFACE_VERSION = 0x34  # what a bind says it speaks: SMPP 3.4

# --- optional parameters (TLV tags, 5.3.2) ------------------------------------------------

TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_SAR_MSG_REF_NUM = 0x020C
TLV_SAR_TOTAL_SEGMENTS = 0x020E
TLV_SAR_SEGMENT_SEQNUM = 0x020F
TLV_NETWORK_ERROR_CODE = 0x0423
TLV_MESSAGE_PAYLOAD = 0x0424
TLV_MESSAGE_STATE = 0x0427

# --- esm_class bits (5.2.12) ------------------------------------------------------------

ESM_CLASS_MESSAGE_TYPE = 0x3C  # bits 5-2: what a deliver_sm carries (0: a short message)
ESM_CLASS_DELIVERY_RECEIPT = 0x04  # message type: an SMSC delivery receipt
ESM_CLASS_INTERMEDIATE_NOTIFICATION = 0x20  # message type: an intermediate notification
ESM_CLASS_UDHI = 0x40  # the short message starts with a User Data Header

# --- registered_delivery (5.2.17), bits 1-0: the SMSC delivery receipt asked for -------------

REGISTERED_DELIVERY_RECEIPT = 0x03  # the mask
RECEIPT_ALWAYS = 0x01  # on success and on failure
RECEIPT_ON_FAILURE = 0x02  # on failure only

# --- limits -------------------------------------------------------------------------------

MAX_SEQUENCE = 0x7FFFFFFF  # sequence_number runs 1..this, then wraps to 1 (3.2)
ADDRESS_MAX = 20  # octets of source_addr / destination_addr before their NUL
MESSAGE_ID_MAX = 64  # octets of a message_id before its NUL
SHORT_MESSAGE_MAX = 254  # octets of short_message (longer text goes in message_payload)
TLV_VALUE_MAX = 0xFFFF  # a TLV's length field is two octets
