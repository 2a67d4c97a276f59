//! Masters sharing one PostgreSQL database: each beats (`cluster_beat`),
//! which records it as a member and takes or renews the lease of the alarm
//! core when it is free, expired or already its own, in one statement the
//! database serialises (`INSERT … ON CONFLICT DO UPDATE … WHERE`, a row
//! lock), so two masters never both hold it. Times are the database's
//! clock, so the masters' clocks need not agree.

use super::sql::{params, Conn, OptionalExtension};
use super::{Store, StoreError};
use crate::model::EpochMs;

/// The lease's one row: one core per database schema.
const CORE: &str = "core";

/// The lease as a beat left it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRecord {
    /// The member holding it (its id) and where its API listens.
    pub holder: String,
    pub url: String,
    /// Grows each time the lease changes hands.
    pub epoch: i64,
    pub acquired: EpochMs,
    pub renewed: EpochMs,
    pub expires: EpochMs,
}

/// What one beat found: the lease (whoever holds it) and the database's
/// time.
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    pub lease: Option<LeaseRecord>,
    pub now: EpochMs,
}

/// A master that beat at least once.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRecord {
    pub id: String,
    pub url: String,
    pub started: EpochMs,
    pub seen: EpochMs,
}

fn database_now(conn: &Conn) -> Result<EpochMs, StoreError> {
    match conn.engine() {
        super::sql::Engine::Postgres => conn.query_row(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            [],
            |r| r.get(0),
        ),
        super::sql::Engine::Sqlite => conn.query_row(
            "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
            [],
            |r| r.get(0),
        ),
    }
}

fn lease_row(conn: &Conn) -> Result<Option<LeaseRecord>, StoreError> {
    conn.query_row(
        "SELECT holder, url, epoch, acquired, renewed, expires FROM cluster_lease WHERE name = ?1",
        params![CORE],
        |r| {
            Ok(LeaseRecord {
                holder: r.get(0)?,
                url: r.get(1)?,
                epoch: r.get(2)?,
                acquired: r.get(3)?,
                renewed: r.get(4)?,
                expires: r.get(5)?,
            })
        },
    )
    .optional()
}

impl Store {
    /// One beat of member `id` (its API at `url`): records it, takes the
    /// core's lease for `lease_ms` if nobody holds it or it expired, renews
    /// it if it is `id`'s, and says who holds it now. On the writer, in a
    /// commit: the answer means the lease row is durable.
    pub async fn cluster_beat(&self, id: String, url: String, lease_ms: i64) -> Result<Beat, StoreError> {
        self.call(move |conn| {
            let now = database_now(conn)?;
            conn.execute(
                "INSERT INTO cluster_members (id, url, started, seen) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (id) DO UPDATE SET url = ?2, seen = ?3",
                params![id, url, now],
            )?;
            conn.execute(
                "INSERT INTO cluster_lease (name, holder, url, epoch, acquired, renewed, expires)
                 VALUES (?1, ?2, ?3, 1, ?4, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET
                    epoch = CASE WHEN cluster_lease.holder = ?2 THEN cluster_lease.epoch ELSE cluster_lease.epoch + 1 END,
                    acquired = CASE WHEN cluster_lease.holder = ?2 THEN cluster_lease.acquired ELSE ?4 END,
                    holder = ?2, url = ?3, renewed = ?4, expires = ?5
                 WHERE cluster_lease.holder = ?2 OR cluster_lease.expires < ?4",
                params![CORE, id, url, now, now + lease_ms],
            )?;
            Ok(Beat {
                lease: lease_row(conn)?,
                now,
            })
        })
        .await
    }

    /// Gives the lease up if `id` holds it (a master stopping), so another
    /// takes over at its next beat rather than after the lease runs out.
    pub async fn cluster_release(&self, id: String) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                "UPDATE cluster_lease SET expires = 0 WHERE name = ?1 AND holder = ?2",
                params![CORE, id],
            )?;
            Ok(())
        })
        .await
    }

    /// Every member that ever beat, and the lease, with the database's time
    /// (`GET /cluster`).
    pub async fn cluster_view(&self) -> Result<(Vec<MemberRecord>, Option<LeaseRecord>, EpochMs), StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id, url, started, seen FROM cluster_members ORDER BY started, id")?;
            let members = stmt
                .query_map([], |r| {
                    Ok(MemberRecord {
                        id: r.get(0)?,
                        url: r.get(1)?,
                        started: r.get(2)?,
                        seen: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((members, lease_row(conn)?, database_now(conn)?))
        })
        .await
    }

    /// Forgets members not seen since `before` (the janitor's: masters that
    /// went away for good).
    pub async fn gc_cluster_members(&self, before: EpochMs) -> Result<usize, StoreError> {
        self.call(move |conn| conn.execute("DELETE FROM cluster_members WHERE seen < ?1", params![before]))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn one_member_holds_the_lease_until_it_runs_out_then_another_takes_it_with_a_new_epoch() {
        let store = Store::for_test();
        let a = store.cluster_beat("a".into(), "http://a".into(), 60_000).await.unwrap();
        let lease = a.lease.unwrap();
        assert_eq!((lease.holder.as_str(), lease.epoch), ("a", 1));
        // b beats while a's lease runs: a keeps it.
        let b = store.cluster_beat("b".into(), "http://b".into(), 60_000).await.unwrap();
        assert_eq!(b.lease.as_ref().unwrap().holder, "a");
        // a renews: same epoch, later expiry.
        let again = store.cluster_beat("a".into(), "http://a".into(), 60_000).await.unwrap();
        let renewed = again.lease.unwrap();
        assert_eq!((renewed.holder.as_str(), renewed.epoch), ("a", 1));
        assert!(renewed.expires >= lease.expires);
        // a's lease runs out (a lease of -1 ms: expired at once); b takes it.
        store.cluster_beat("a".into(), "http://a".into(), -1).await.unwrap();
        let b = store.cluster_beat("b".into(), "http://b".into(), 60_000).await.unwrap();
        let taken = b.lease.unwrap();
        assert_eq!(
            (taken.holder.as_str(), taken.url.as_str(), taken.epoch),
            ("b", "http://b", 2)
        );
        // and a can no longer renew.
        let a = store.cluster_beat("a".into(), "http://a".into(), 60_000).await.unwrap();
        assert_eq!(a.lease.unwrap().holder, "b");
        let (members, lease, _) = store.cluster_view().await.unwrap();
        assert_eq!(members.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(lease.unwrap().holder, "b");
    }

    #[actix_rt::test]
    async fn members_not_seen_since_a_time_are_forgotten() {
        let store = Store::for_test();
        let beat = store.cluster_beat("a".into(), "http://a".into(), 60_000).await.unwrap();
        store.cluster_beat("b".into(), "http://b".into(), 60_000).await.unwrap();
        assert_eq!(store.gc_cluster_members(beat.now - 1).await.unwrap(), 0);
        assert_eq!(store.gc_cluster_members(i64::MAX).await.unwrap(), 2);
        assert!(store.cluster_view().await.unwrap().0.is_empty());
    }

    #[actix_rt::test]
    async fn a_released_lease_is_taken_at_the_next_beat() {
        let store = Store::for_test();
        store.cluster_beat("a".into(), "http://a".into(), 60_000).await.unwrap();
        store.cluster_release("b".into()).await.unwrap();
        let b = store.cluster_beat("b".into(), "http://b".into(), 60_000).await.unwrap();
        assert_eq!(b.lease.unwrap().holder, "a", "only its holder releases a lease");
        store.cluster_release("a".into()).await.unwrap();
        let b = store.cluster_beat("b".into(), "http://b".into(), 60_000).await.unwrap();
        assert_eq!(b.lease.unwrap().holder, "b");
    }
}
