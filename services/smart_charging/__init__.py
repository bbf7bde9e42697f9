"""Smart charging service: SetChargingProfile / ClearChargingProfile / GetCompositeSchedule, the
central system's copy of every charging profile a charge point accepted, and the composite schedule
computed server-side from it."""
