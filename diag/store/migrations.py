"""The store's schema, as the list of migrations that builds it.

Migration N (1-based) brings a store from `PRAGMA user_version` N-1 to N; `Store.migrate` applies
each in its own transaction, whole or not at all. Append, never edit: a store written by an older
diag is brought up to date by running the ones it lacks.
"""

MIGRATIONS = [
    # 1: initial schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE sources (
        key TEXT PRIMARY KEY,            -- "dev:ino" of the file
        path TEXT NOT NULL,              -- the configured path it was read under
        fingerprint TEXT NOT NULL DEFAULT '',
        fp_len INTEGER NOT NULL DEFAULT 0,
        format TEXT,
        offset INTEGER NOT NULL DEFAULT 0,
        lineno INTEGER NOT NULL DEFAULT 0,
        size INTEGER NOT NULL DEFAULT 0,
        lines_read INTEGER NOT NULL DEFAULT 0,
        truncated_lines INTEGER NOT NULL DEFAULT 0,
        last_line_time REAL,
        rotations INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        state TEXT NOT NULL DEFAULT 'active',   -- active | rotated | done
        updated_at REAL NOT NULL
    );
    CREATE INDEX sources_path ON sources(path);
    CREATE TABLE traces (
        id TEXT PRIMARY KEY,
        source TEXT,
        server TEXT,
        status TEXT,
        received_at REAL,
        updated_at REAL NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX traces_updated ON traces(updated_at);
    CREATE INDEX traces_status ON traces(status);
    CREATE TABLE findings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        rule TEXT NOT NULL,
        severity TEXT NOT NULL,
        category TEXT NOT NULL,
        title TEXT,
        ts REAL,
        created_at REAL NOT NULL,
        path TEXT,
        line INTEGER,
        request_id TEXT,
        summary TEXT,
        remedy TEXT,
        fields TEXT,
        excerpt TEXT
    );
    CREATE INDEX findings_created ON findings(created_at);
    CREATE INDEX findings_request ON findings(request_id);
    """,
    # 2: a finding row stands for `count` occurrences (Ray's "[repeated Nx across cluster]")
    """
    ALTER TABLE findings ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
    """,
    # 3: alerts (diag/alerts): alert state, groups, silences, and the outbox the sender delivers from
    """
    CREATE TABLE alerts (
        fp TEXT PRIMARY KEY,             -- Alertmanager fingerprint of the labels
        rule TEXT NOT NULL,
        status TEXT NOT NULL,            -- firing | resolved
        active INTEGER NOT NULL,         -- 1 while the manager tracks it; 0 = recently resolved
        updated_at REAL NOT NULL,
        data TEXT NOT NULL
    );
    CREATE TABLE alert_groups (key TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        matchers TEXT NOT NULL,
        starts_at REAL NOT NULL,
        ends_at REAL NOT NULL,
        comment TEXT,
        created_by TEXT
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        notification_id TEXT NOT NULL,
        sink TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL,
        next_attempt REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'queued',  -- queued | delivered | expired
        last_error TEXT,
        delivered_at REAL
    );
    CREATE INDEX outbox_state ON outbox(state, id);
    """,
    # 4: what the dashboard filters and /metrics count on: real columns with indexes (listing 1,000,000
    # traces by JSON blob would scan them all), cumulative counters that retention never prunes, engine
    # stats samples for the overview's chart. `t` orders the list: received_at, else the first commit.
    """
    ALTER TABLE traces ADD COLUMN t REAL;
    ALTER TABLE traces ADD COLUMN model TEXT;
    ALTER TABLE traces ADD COLUMN http_status INTEGER;
    ALTER TABLE traces ADD COLUMN latency_s REAL;
    ALTER TABLE traces ADD COLUMN images INTEGER;
    ALTER TABLE traces ADD COLUMN nfindings INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE traces ADD COLUMN counted INTEGER NOT NULL DEFAULT 0;
    UPDATE traces SET t = coalesce(received_at, updated_at), model = json_extract(data, '$.model'),
        http_status = json_extract(data, '$.http_status'), latency_s = json_extract(data, '$.latency_s'),
        images = json_extract(data, '$.images'), nfindings = coalesce(json_array_length(data, '$.findings'), 0),
        counted = (status != 'in_flight');
    CREATE INDEX traces_t ON traces(t);
    CREATE INDEX traces_status_t ON traces(status, t);
    CREATE INDEX traces_model_t ON traces(model, t);
    CREATE INDEX traces_http_t ON traces(http_status, t);
    CREATE INDEX traces_findings_t ON traces(t) WHERE nfindings > 0;
    CREATE INDEX traces_images_t ON traces(t) WHERE images > 0;
    CREATE INDEX findings_rule ON findings(rule);
    CREATE TABLE counters (name TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL DEFAULT 0,
                           PRIMARY KEY (name, labels)) WITHOUT ROWID;
    INSERT INTO counters (name, labels, value)
        SELECT 'requests', json_object('http_status', coalesce(CAST(http_status AS TEXT), ''), 'model_name', coalesce(model, ''),
                                       'status', status), count(*)
        FROM traces WHERE counted GROUP BY 1, 2;
    INSERT INTO counters (name, labels, value)
        SELECT 'findings', json_object('category', category, 'rule', rule, 'severity', severity), count(*)
        FROM findings GROUP BY 1, 2;
    CREATE TABLE engine_stats (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        ts REAL NOT NULL,
        running INTEGER,
        waiting INTEGER,
        kv_usage REAL,          -- percent, as the server logs it
        prompt_tps REAL,
        gen_tps REAL
    );
    CREATE INDEX engine_stats_ts ON engine_stats(ts);
    CREATE INDEX engine_stats_source_ts ON engine_stats(source, ts);
    """,
    # 5: which `diag scan --store` run wrote a trace, a finding or an engine stats row, and for which file
    # (by its absolute path), so scanning that file again replaces them; NULL for what the daemon
    # stored while following a log live, which a scan never touches (diag.store.rescan)
    """
    ALTER TABLE traces ADD COLUMN scanned_path TEXT;
    ALTER TABLE traces ADD COLUMN scan_run TEXT;
    ALTER TABLE findings ADD COLUMN scanned_path TEXT;
    ALTER TABLE findings ADD COLUMN scan_run TEXT;
    ALTER TABLE engine_stats ADD COLUMN scanned_path TEXT;
    ALTER TABLE engine_stats ADD COLUMN scan_run TEXT;
    CREATE INDEX traces_scanned ON traces(scanned_path) WHERE scanned_path IS NOT NULL;
    CREATE INDEX findings_scanned ON findings(scanned_path) WHERE scanned_path IS NOT NULL;
    CREATE INDEX engine_stats_scanned ON engine_stats(scanned_path) WHERE scanned_path IS NOT NULL;
    """,
    # 6: traces(status) is the first column of traces(status, t), which answers the same lookups: one
    # index fewer to update on every trace the daemon writes
    """
    DROP INDEX IF EXISTS traces_status;
    """,
    # 7: a followed file whose name is not valid UTF-8: `path` holds its display name (text, for people
    # and SQL), `path_bytes` the name's exact bytes, which a restart opens it by (diag.fsname); NULL
    # when the name is valid UTF-8 (then `path` is the name itself)
    """
    ALTER TABLE sources ADD COLUMN path_bytes BLOB;
    """,
    # 8: a file read to its end: the fingerprint of its last bytes (up to 256 before `offset`) beside
    # that of its first ones, so that a restart tells it, grown under a name a glob matches, from
    # another file that took its inode (diag.ingest.identity); '' for any other
    """
    ALTER TABLE sources ADD COLUMN end_fingerprint TEXT NOT NULL DEFAULT '';
    """,
]
