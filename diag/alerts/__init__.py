"""Alerts: findings become Alertmanager-style alerts, grouped, silenced, inhibited and delivered.

The flow, one direction: the daemon's hits → `manager.AlertManager` (alerts keyed by label
fingerprint, groups with Alertmanager's timers, silences, inhibition) → notifications written to
the outbox in the same SQLite transaction as the findings and offsets that caused them →
`outbox.Sender` (its own thread and connection) delivers each one to its sink with retries, so a
slow or dead receiver never slows reading and a crash between commit and delivery loses nothing.
"""
