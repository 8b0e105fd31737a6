"""The doctor's checks, grouped by what they look at: the host and its logs (`host`), the
kernel log (`kernel`), and HTTP probes of the running server (`probes`)."""
