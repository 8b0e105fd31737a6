"""Lines to typed events: the event vocabulary (`events`), the per-source parser that detects the
format and assembles multi-line records (`source`), the wrappers and pastes around lines
(`wrappers`, `paste`, `frames`), one module per server format (`formats/`), timestamps (`clock`),
and what keeps user content out (`usercontent`, `redact`)."""
