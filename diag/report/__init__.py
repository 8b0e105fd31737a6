"""What `diag scan` prints: the JSON document and its summary (`document`), written streamed
for `--json` (`jsonstream`)."""
