"""The SQLite schema as versioned migrations (PRAGMA user_version counts those applied)."""

from __future__ import annotations

# Each entry moves the schema from version i to i+1. Never edit a released entry: append.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        pbx TEXT NOT NULL,
        linkedid TEXT NOT NULL,
        direction TEXT NOT NULL,
        customer_number TEXT NOT NULL,
        customer_e164 TEXT,
        customer_name TEXT NOT NULL,
        did TEXT,
        queue TEXT,
        answered INTEGER NOT NULL,
        disposition TEXT NOT NULL,
        agent_id TEXT,
        agent_name TEXT,
        talk_seconds INTEGER NOT NULL,
        wait_seconds INTEGER NOT NULL,
        variables TEXT NOT NULL,
        facts TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        end_reason TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        UNIQUE (pbx, linkedid)
    );
    CREATE INDEX calls_customer ON calls (customer_e164);
    CREATE INDEX calls_ended ON calls (ended_at);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        call_id INTEGER NOT NULL REFERENCES calls (id),
        rule TEXT NOT NULL,
        recipient TEXT NOT NULL,
        to_number TEXT NOT NULL,
        provider TEXT NOT NULL,
        template TEXT NOT NULL,
        body TEXT,
        encoding TEXT,
        segments INTEGER,
        state TEXT NOT NULL,
        reason TEXT,
        provider_id TEXT,
        error_code TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        send_at REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (call_id, rule, to_number)
    );
    CREATE INDEX messages_due ON messages (state, send_at);
    CREATE INDEX messages_to ON messages (to_number);
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages (id),
        at REAL NOT NULL,
        outcome TEXT NOT NULL,
        error_code TEXT,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX attempts_message ON attempts (message_id);
    """,
    # Ambiguity and crash recovery. attempt_started_at: when the latest send attempt was
    # claimed (a provider lookup searches from there). settle_from: for an `unknown` message,
    # when its request could no longer be in flight; NULL means no lookup is scheduled (a
    # human decides). lookups: inconclusive lookups since the latest attempt. A row left in
    # `sending` by an older version was claimed at its updated_at.
    """
    ALTER TABLE messages ADD COLUMN attempt_started_at REAL;
    ALTER TABLE messages ADD COLUMN settle_from REAL;
    ALTER TABLE messages ADD COLUMN lookups INTEGER NOT NULL DEFAULT 0;
    UPDATE messages SET attempt_started_at = updated_at WHERE state = 'sending'
    """,
    # The intake journal: AMI events of calls not yet recorded, so that a restart (or a
    # crash) resumes those calls instead of losing them. Trimmed as calls are recorded.
    """
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        pbx TEXT NOT NULL,
        name TEXT NOT NULL,
        headers TEXT NOT NULL
    );
    CREATE INDEX journal_pbx ON journal (pbx, id)
    """,
    # The suppression list: numbers that must never be texted (STOP replies, `optout add`,
    # imports). `number` is E.164, or `erased:<hash>` after `erase` (the person stays
    # suppressed without their number being kept). suppression_log keeps every change.
    """
    CREATE TABLE suppressions (
        number TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        source TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE suppression_log (
        id INTEGER PRIMARY KEY,
        number TEXT NOT NULL,
        action TEXT NOT NULL,
        reason TEXT NOT NULL,
        source TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX suppression_log_number ON suppression_log (number);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('suppression_key', hex(randomblob(32)))
    """,
    # The policy stage. Per message: its template's category, its rule's priority, the
    # recipient's region, when it stops being worth sending, its price, whether a later
    # answered call cancels it, and when it was first due (its max_age counts from there).
    # policy_state: the fraud guard and the incident notice, which the CLI sets while the
    # daemon runs; policy_events: every trip, release and incident change.
    """
    ALTER TABLE messages ADD COLUMN category TEXT NOT NULL DEFAULT 'service';
    ALTER TABLE messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN region TEXT;
    ALTER TABLE messages ADD COLUMN expires_at REAL;
    ALTER TABLE messages ADD COLUMN cost REAL NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN cancel_if_answered INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN due_from REAL;
    CREATE INDEX messages_attempted ON messages (attempt_started_at);
    CREATE TABLE policy_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE policy_events (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    )
    """,
    # The web side. `delivery` is the carrier's final word on a sent message (delivered,
    # undelivered, failed), kept apart from `state`, which the sender owns: a receipt can
    # arrive before the sender has recorded the acceptance. `receipts` holds every status
    # callback once (a replay is ignored); `inbound` every reply once (by Twilio's SID);
    # `links`/`clicks` the tracked links; `coupons` the pools, a code bound to one message
    # forever; `held_coupons` the text (with its markers) of a message held for a code.
    # Message and call ids are plain columns: retention and erase may outlive them.
    """
    ALTER TABLE messages ADD COLUMN delivery TEXT;
    ALTER TABLE messages ADD COLUMN delivered_at REAL;
    CREATE INDEX messages_provider_id ON messages (provider_id);
    CREATE TABLE receipts (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL,
        call_id INTEGER NOT NULL,
        provider_id TEXT NOT NULL,
        status TEXT NOT NULL,
        error_code TEXT,
        at REAL NOT NULL,
        UNIQUE (message_id, provider_id, status)
    );
    CREATE TABLE inbound (
        id INTEGER PRIMARY KEY,
        sid TEXT NOT NULL UNIQUE,
        from_number TEXT NOT NULL,
        to_number TEXT NOT NULL,
        body TEXT NOT NULL,
        kind TEXT NOT NULL,
        message_id INTEGER,
        call_id INTEGER,
        received_at REAL NOT NULL
    );
    CREATE INDEX inbound_from ON inbound (from_number);
    CREATE TABLE ratings (
        id INTEGER PRIMARY KEY,
        inbound_id INTEGER NOT NULL UNIQUE,
        call_id INTEGER NOT NULL,
        message_id INTEGER NOT NULL,
        customer TEXT NOT NULL,
        agent_id TEXT,
        queue TEXT,
        score INTEGER NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE links (
        token TEXT PRIMARY KEY,
        message_id INTEGER NOT NULL,
        url TEXT NOT NULL,
        tag TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX links_message ON links (message_id);
    CREATE TABLE clicks (
        id INTEGER PRIMARY KEY,
        token TEXT NOT NULL,
        message_id INTEGER NOT NULL,
        call_id INTEGER NOT NULL,
        customer TEXT NOT NULL,
        tag TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX clicks_customer ON clicks (customer);
    CREATE TABLE coupons (
        id INTEGER PRIMARY KEY,
        pool TEXT NOT NULL,
        code TEXT NOT NULL,
        loaded_at REAL NOT NULL,
        message_id INTEGER,
        used_at REAL,
        UNIQUE (pool, code)
    );
    CREATE INDEX coupons_free ON coupons (pool, message_id, id);
    CREATE TABLE held_coupons (
        message_id INTEGER PRIMARY KEY,
        text TEXT NOT NULL,
        slots TEXT NOT NULL
    )
    """,
    # Provider failover. `fallbacks`: the providers still to try after `provider`, in the
    # rule's order (a JSON list); a failover moves the first of them into `provider`.
    # `attempts_before`: the sends made through earlier providers, so that each provider's
    # retry budget counts its own attempts.
    """
    ALTER TABLE messages ADD COLUMN fallbacks TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE messages ADD COLUMN attempts_before INTEGER NOT NULL DEFAULT 0
    """,
    # When the request of the latest attempt was about to go out. The sender claims a batch
    # (`sending`) and sends its messages one by one: after a crash, a claimed message whose
    # request never started is provably unsent and goes back to `pending`; only the one in
    # flight needs the provider's lookup. 0: claimed, not started; NULL (rows of older
    # versions): unknown, so looked up.
    """
    ALTER TABLE messages ADD COLUMN request_started_at REAL
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
