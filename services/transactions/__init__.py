"""Transactions service: authorization (id tags), the transaction lifecycle (StartTransaction,
MeterValues, StopTransaction), remote start/stop, reservations and the local authorization list."""
