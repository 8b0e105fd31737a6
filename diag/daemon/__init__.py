"""`diag daemon`: its configuration (`config`), the main loop that follows logs through the pipeline
(`service`), the one transaction that commits what the pipeline derived with the read offsets
(`commit`), and systemd's notify protocol (`systemd`)."""
