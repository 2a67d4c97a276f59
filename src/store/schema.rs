//! Versioned migrations: each entry upgrades the schema by one version, in
//! order, inside one transaction with the `user_version` bump. Never edit a
//! released migration; add the next one.

/// The master's database.
pub const MASTER: &[&str] = &[
    // 1: the walking skeleton.
    r#"
    CREATE TABLE accounts (
        uuid TEXT PRIMARY KEY,
        login TEXT NOT NULL UNIQUE,
        email TEXT NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE TABLE probes (
        uuid TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        machine TEXT,
        body TEXT NOT NULL
    );
    CREATE INDEX probes_by_user ON probes(user);
    CREATE TABLE events (
        uuid BLOB PRIMARY KEY,
        time INTEGER NOT NULL,
        received INTEGER NOT NULL,
        body TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE alarm_ids (
        user TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL
    );
    CREATE TABLE alarms (
        user TEXT NOT NULL,
        id INTEGER NOT NULL,
        monitor TEXT NOT NULL,
        closed INTEGER NOT NULL,
        time_closed INTEGER,
        body TEXT NOT NULL,
        PRIMARY KEY (user, id)
    );
    CREATE INDEX alarms_open_by_monitor ON alarms(monitor) WHERE closed = 0;
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        created INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        body TEXT NOT NULL
    );
    CREATE INDEX outbox_pending ON outbox(created) WHERE state = 'pending';
    CREATE TABLE servers (
        uuid TEXT PRIMARY KEY,
        hostname TEXT,
        last_event TEXT NOT NULL,
        last_seen INTEGER NOT NULL
    );
    "#,
    // 2: events are marked routed once every alarm actor they concern has
    // committed them; unrouted ones are replayed at start (nothing committed
    // with a 202 is lost to a crash).
    // The table gets a sequence so replay keeps arrival order.
    r#"
    CREATE TABLE events_v2 (
        seq INTEGER PRIMARY KEY,
        uuid BLOB NOT NULL UNIQUE,
        time INTEGER NOT NULL,
        received INTEGER NOT NULL,
        body TEXT NOT NULL,
        routed INTEGER NOT NULL DEFAULT 1
    );
    INSERT INTO events_v2 (uuid, time, received, body) SELECT uuid, time, received, body FROM events ORDER BY received, time;
    DROP TABLE events;
    ALTER TABLE events_v2 RENAME TO events;
    CREATE INDEX events_unrouted ON events(seq) WHERE routed = 0;
    "#,
    // 3: relays ask for "every probe whose agent is X" (`GET|HEAD
    // /agentprobes`), so the agent gets a column and an index; existing rows
    // take it from their JSON body.
    r#"
    ALTER TABLE probes ADD COLUMN agent TEXT;
    UPDATE probes SET agent = json_extract(body, '$.agent');
    CREATE INDEX probes_by_agent ON probes(agent) WHERE agent IS NOT NULL;
    "#,
    // 4: probe groups and contacts (the reference kept them in UFDS).
    r#"
    CREATE TABLE probegroups (
        uuid TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX probegroups_by_user ON probegroups(user);
    CREATE TABLE contacts (
        user TEXT NOT NULL,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (user, name)
    );
    "#,
    // 5: maintenance windows; `owner` is an account uuid, or "operator" for
    // windows across accounts. Ids count per owner and are never reused.
    r#"
    CREATE TABLE maintenance_ids (
        owner TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL
    );
    CREATE TABLE maintenances (
        owner TEXT NOT NULL,
        id INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (owner, id)
    );
    "#,
    // 6: the flood guard's view of machines (which server, up or down), so a
    // restarted master still knows what a silent server takes down.
    r#"
    CREATE TABLE machines (
        uuid TEXT PRIMARY KEY,
        server TEXT NOT NULL,
        alias TEXT,
        up INTEGER NOT NULL,
        seen INTEGER NOT NULL
    );
    CREATE INDEX machines_by_server ON machines(server);
    "#,
    // 7: how many events of each type are stored (`amon_events_stored`),
    // kept by `commit_events` in the commit of the events, so a scrape reads
    // three rows instead of the JSON of every event (a table that only
    // grows: at a million events, about two seconds of the store thread).
    // Each type has its row from the start, so the gauge shows 0.
    r#"
    CREATE TABLE event_counts (
        type TEXT PRIMARY KEY,
        stored INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO event_counts (type, stored) VALUES ('machine', 0), ('probe', 0), ('server', 0);
    INSERT INTO event_counts (type, stored)
        SELECT type, COUNT(*) FROM (SELECT json_extract(body, '$.type') AS type FROM events) WHERE type IS NOT NULL GROUP BY type
        ON CONFLICT (type) DO UPDATE SET stored = excluded.stored;
    "#,
    // 8: each event is written once. Instead of a `routed` flag updated on
    // every row, the router keeps one watermark: every event up to
    // `route_mark.applied` has been applied by every alarm actor it concerns
    // (replay starts after it). Each monitor records the last event it
    // applied in the commit of its alarm (`monitor_marks`), so a replay
    // applies nothing twice. The `routed` column stays (SQLite cannot drop a
    // column without copying the table) and is no longer written.
    r#"
    CREATE TABLE route_mark (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        applied INTEGER NOT NULL
    );
    INSERT INTO route_mark (id, applied) VALUES (0, COALESCE(
        (SELECT MIN(seq) - 1 FROM events WHERE routed = 0),
        (SELECT MAX(seq) FROM events),
        0));
    CREATE TABLE monitor_marks (
        monitor TEXT PRIMARY KEY,
        seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    DROP INDEX events_unrouted;
    "#,
    // 9: tenancy. Which machines each compute node carries and who owns
    // them, as relays report them (`PUT /servers/:server/machines`, and the
    // owner a machine event carries): an account's probe alarms only on a
    // machine it owns. Accounts may be operators (their probes watch any
    // machine, and compute nodes).
    r#"
    CREATE TABLE inventory (
        machine TEXT PRIMARY KEY,
        server TEXT NOT NULL,
        owner TEXT,
        alias TEXT,
        updated INTEGER NOT NULL
    );
    CREATE INDEX inventory_by_server ON inventory(server);
    CREATE INDEX inventory_by_owner ON inventory(owner);
    ALTER TABLE accounts ADD COLUMN operator INTEGER NOT NULL DEFAULT 0;
    "#,
    // 10: an account's extra attributes (the reference's UFDS person had
    // them; those ending in `email` or `webhook` are contacts), a JSON
    // object of strings.
    r#"
    ALTER TABLE accounts ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
    "#,
    // 11: masters sharing one database (PostgreSQL): who is there, and the
    // lease of the one that runs the alarm core. Times are the database's
    // clock, in ms. Unused by a master on SQLite, kept for the same versions.
    r#"
    CREATE TABLE cluster_members (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        started INTEGER NOT NULL,
        seen INTEGER NOT NULL
    );
    CREATE TABLE cluster_lease (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        url TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        acquired INTEGER NOT NULL,
        renewed INTEGER NOT NULL,
        expires INTEGER NOT NULL
    );
    "#,
];

/// The relay's database: the spool of events not yet acknowledged by the
/// master, and the last state of every zone (for reconciliation).
pub const RELAY: &[&str] = &[
    // 1: spool and zone states.
    r#"
    CREATE TABLE spool (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid BLOB NOT NULL UNIQUE,
        body TEXT NOT NULL
    );
    CREATE TABLE zones (
        machine TEXT PRIMARY KEY,
        server TEXT NOT NULL,
        state TEXT NOT NULL,
        alias TEXT,
        owner TEXT
    );
    CREATE TABLE dead_letter (
        uuid BLOB PRIMARY KEY,
        time INTEGER NOT NULL,
        status INTEGER NOT NULL,
        reason TEXT NOT NULL,
        body TEXT NOT NULL
    );
    "#,
];

/// The master's database in PostgreSQL, version for version the same
/// schema as [`MASTER`] (the same tables, columns and meaning, in
/// PostgreSQL's types: `BIGINT` for integers, `BYTEA` for blobs, an
/// identity for `events.seq`; `user` quoted, a reserved word there).
/// PostgreSQL support began at version 10, so a new database is created at
/// that version at once and the earlier entries are empty. Add each later
/// migration to both lists, with the same number.
pub const MASTER_POSTGRES: &[&str] = &[
    "", // 1
    "", // 2
    "", // 3
    "", // 4
    "", // 5
    "", // 6
    "", // 7
    "", // 8
    "", // 9
    // 10: the schema of SQLite's version 10, created whole.
    r#"
    CREATE TABLE accounts (
        uuid TEXT PRIMARY KEY,
        login TEXT NOT NULL UNIQUE,
        email TEXT NOT NULL,
        created BIGINT NOT NULL,
        operator BIGINT NOT NULL DEFAULT 0,
        attributes TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE probes (
        uuid TEXT PRIMARY KEY,
        "user" TEXT NOT NULL,
        machine TEXT,
        body TEXT NOT NULL,
        agent TEXT
    );
    CREATE INDEX probes_by_user ON probes("user");
    CREATE INDEX probes_by_agent ON probes(agent) WHERE agent IS NOT NULL;
    CREATE TABLE events (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        uuid BYTEA NOT NULL UNIQUE,
        time BIGINT NOT NULL,
        received BIGINT NOT NULL,
        body TEXT NOT NULL,
        routed BIGINT NOT NULL DEFAULT 1
    );
    CREATE TABLE alarm_ids (
        "user" TEXT PRIMARY KEY,
        last_id BIGINT NOT NULL
    );
    CREATE TABLE alarms (
        "user" TEXT NOT NULL,
        id BIGINT NOT NULL,
        monitor TEXT NOT NULL,
        closed BIGINT NOT NULL,
        time_closed BIGINT,
        body TEXT NOT NULL,
        PRIMARY KEY ("user", id)
    );
    CREATE INDEX alarms_open_by_monitor ON alarms(monitor) WHERE closed = 0;
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        created BIGINT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        body TEXT NOT NULL,
        -- creation order (SQLite's rowid), for rows created in the same ms
        ord BIGINT GENERATED ALWAYS AS IDENTITY
    );
    CREATE INDEX outbox_pending ON outbox(created) WHERE state = 'pending';
    CREATE TABLE servers (
        uuid TEXT PRIMARY KEY,
        hostname TEXT,
        last_event TEXT NOT NULL,
        last_seen BIGINT NOT NULL
    );
    CREATE TABLE probegroups (
        uuid TEXT PRIMARY KEY,
        "user" TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX probegroups_by_user ON probegroups("user");
    CREATE TABLE contacts (
        "user" TEXT NOT NULL,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY ("user", name)
    );
    CREATE TABLE maintenance_ids (
        owner TEXT PRIMARY KEY,
        last_id BIGINT NOT NULL
    );
    CREATE TABLE maintenances (
        owner TEXT NOT NULL,
        id BIGINT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (owner, id)
    );
    CREATE TABLE machines (
        uuid TEXT PRIMARY KEY,
        server TEXT NOT NULL,
        alias TEXT,
        up BIGINT NOT NULL,
        seen BIGINT NOT NULL
    );
    CREATE INDEX machines_by_server ON machines(server);
    CREATE TABLE event_counts (
        type TEXT PRIMARY KEY,
        stored BIGINT NOT NULL
    );
    INSERT INTO event_counts (type, stored) VALUES ('machine', 0), ('probe', 0), ('server', 0);
    CREATE TABLE route_mark (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        applied BIGINT NOT NULL
    );
    INSERT INTO route_mark (id, applied) VALUES (0, 0);
    CREATE TABLE monitor_marks (
        monitor TEXT PRIMARY KEY,
        seq BIGINT NOT NULL
    );
    CREATE TABLE inventory (
        machine TEXT PRIMARY KEY,
        server TEXT NOT NULL,
        owner TEXT,
        alias TEXT,
        updated BIGINT NOT NULL
    );
    CREATE INDEX inventory_by_server ON inventory(server);
    CREATE INDEX inventory_by_owner ON inventory(owner);
    "#,
    // 11: as SQLite's.
    r#"
    CREATE TABLE cluster_members (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        started BIGINT NOT NULL,
        seen BIGINT NOT NULL
    );
    CREATE TABLE cluster_lease (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        url TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        acquired BIGINT NOT NULL,
        renewed BIGINT NOT NULL,
        expires BIGINT NOT NULL
    );
    "#,
];

#[cfg(test)]
mod tests {
    #[test]
    fn both_engines_have_every_schema_version() {
        assert_eq!(
            super::MASTER_POSTGRES.len(),
            super::MASTER.len(),
            "a migration was added to one engine's list only"
        );
    }
}
