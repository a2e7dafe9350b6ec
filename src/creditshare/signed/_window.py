"""How far apart a signed request's time and its ledger record's time may be.

Two clocks stamp one query: the requester's when it signs, the coordinator's when it
records. Every data node refuses a record whose time is further than this from the
signed time (a record stamped long after the signature could be a replay dressed up
as new), so the coordinator refuses such a request itself, before anything is recorded:
else the record would be written and then refused by every node.
"""

from __future__ import annotations

from datetime import timedelta

__all__ = ["RECORD_TIME_WINDOW"]

#: The most a ledger record's time may differ from the time its request was signed.
RECORD_TIME_WINDOW = timedelta(seconds=60)
