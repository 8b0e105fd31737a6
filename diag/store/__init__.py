"""The daemon's SQLite store, the contract between the core and the web/alerts side: the
connection and its one write path (`db`), the schema as migrations (`migrations`), cumulative
counters for /metrics (`counters`), and the documents read from it by the CLI, the dashboard and
the metrics collector (`views`)."""
