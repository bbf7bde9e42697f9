"""Transactions service: Authorize, StartTransaction, MeterValues, StopTransaction and the commands around them
(RemoteStart/StopTransaction, ReserveNow, CancelReservation, SendLocalList, GetLocalListVersion).

Owns, in PostgreSQL (``tx_*`` tables, migrations ``transactions_*``): id tags, transactions (with their stop
data and reconciliation history), meter values (partitioned by day), orphan stops, reservations, local
lists, pending RemoteStart profiles and an event outbox. Nothing in Redis.

Publishes ``transaction.started`` (with the RemoteStart TxProfile), ``transaction.stopped`` (closed_by,
reconciled, correction, orphan), ``meter.values``, ``reservation.changed``. Follows ``station.booted`` and
``connector.status_changed`` to close transactions the charge point no longer has.

Its decisions (see ``rules.py`` and docs/adr/transaction-reconciliation.md):

* The charge point is the source of truth: every StartTransaction is recorded whatever the authorization;
  one answered other than Accepted holds no connector. Commands are sent whatever the records say, with
  warnings where they disagree.
* Ghosts are closed from what the charge point reports (a boot, its connector free, a new start on the
  connector) or by an operator, with an estimate (last energy register reading, else meterStart); the charge
  point's own late StopTransaction corrects the estimate.
* Resent CALLs store nothing twice (unique keys in PostgreSQL); transaction ids come from a sequence.

Layout: ``handlers.py`` (entry points), ``rules.py`` (pure decisions), ``store.py`` (PostgreSQL),
``outbox.py`` (event publication), ``maintenance.py`` (partitions, retention).
"""
