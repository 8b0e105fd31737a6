"""Reading bytes: files, archives and stdin turned into bounded lines (`reader`), files followed
live through rotation and truncation (`follow`, one open file each a `filereader.FileReader`), and
the hot path that classifies lifecycle lines in raw chunks (`fastpath`)."""
