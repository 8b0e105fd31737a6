"""`diag daemon`: its configuration (`config`), the main loop that follows logs and commits what the
pipeline derives (`service`), and systemd's notify protocol (`systemd`)."""
