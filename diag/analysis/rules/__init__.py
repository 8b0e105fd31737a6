"""Rule files: the rule model and its loading (`ruleset`), the file schema (`schema`), the literal
prefilter that skips rules an event cannot match (`prefilter`), the checks behind `diag rules lint`
(`lint`) and the examples every rule carries, run by `diag rules test` (`examples`)."""
