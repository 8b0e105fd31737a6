"""What `diag scan` prints: the JSON document and its request summary (`document`), that document
written streamed for `--json` (`jsonstream`), and the report for people (`text`); the latency
percentiles both the summary and the dashboard's overview use (`percentile`)."""
