"""Events to results: per-request traces (`traces`, with `traceids` and `access_index`), startup
and engine facts (`facts`), rule hits and findings (`findings`, rules themselves in `rules/`), and
the per-stage guard that turns a bug met by one line into a counted internal error (`guard`)."""
