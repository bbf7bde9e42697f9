"""Smart charging service (OCPP 1.6 §3.13, §5.5, §5.7, §5.16).

Owns SetChargingProfile, ClearChargingProfile and GetCompositeSchedule; keeps (PostgreSQL, ``store.py``)
every profile a charge point accepted, the RemoteStart TxProfile of each transaction, what each charge point
advertises (GetConfiguration on boot or when first needed) and its supply, and predicts its composite
schedule the way that kind of charge point computes it (a preset of conventions, ``csms.charging``).
Manages sites: the sum of the members' caps stays under the site's limit (``balancing.py``).

Events published: ``charging.profiles_changed`` (set / cleared per connector), ``charging.schedule_mismatch``
(a GetCompositeSchedule answer disagrees with the prediction), ``charging.site_rebalanced``.
Events followed: ``station.booted`` (vendor/model/firmware for the preset rules; configuration keys),
``transaction.started`` (its RemoteStart profile becomes its TxProfile; site rebalance),
``transaction.stopped`` (its TxProfiles are discarded; site rebalance), ``meter.values`` (draw of site
members).

Decisions where OCPP is silent (``rules.py``): a TxProfile is sent whatever the records say of its
connector's transaction and as the operator gave it (a disagreement comes back as a warning; one without a
transactionId is recorded for the transaction they show, with a warning); what the charge point's advertised
limits or OCPP forbid is refused before sending; a ClearChargingProfile answered otherwise than the records
predict comes back with a warning; the preset of a charge point is the operator's choice for it, else the
first boot rule matching it, else the global default.
"""
