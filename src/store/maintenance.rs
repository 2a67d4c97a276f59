//! Maintenance windows, by owner: an account's uuid, or `operator` for a
//! window across accounts. Ids count per owner and are never reused, so a
//! deleted or ended window answers `410`.

use super::sql::{params, OptionalExtension};
use uuid::Uuid;

use super::{json_row, json_rows, Lookup, Store, StoreError};
use crate::model::MaintenanceWindow;

impl Store {
    /// Stores a new window, giving it its owner's next id.
    pub async fn create_window(&self, mut window: MaintenanceWindow) -> Result<MaintenanceWindow, StoreError> {
        let result = self
            .call(move |conn| {
                let owner = window_owner(window.user);
                let id: i64 = conn.query_row(
                    "INSERT INTO maintenance_ids (owner, last_id) VALUES (?1, 1)
                 ON CONFLICT(owner) DO UPDATE SET last_id = maintenance_ids.last_id + 1 RETURNING last_id",
                    params![owner],
                    |r| r.get(0),
                )?;
                window.id = id as u64;
                conn.execute(
                    "INSERT INTO maintenances (owner, id, body) VALUES (?1, ?2, ?3)",
                    params![owner, id, serde_json::to_string(&window)?],
                )?;
                Ok(window)
            })
            .await;
        self.changed(result)
    }

    pub async fn delete_window(&self, user: Option<Uuid>, id: u64) -> Result<bool, StoreError> {
        let result = self
            .call(move |conn| {
                Ok(conn.execute(
                    "DELETE FROM maintenances WHERE owner = ?1 AND id = ?2",
                    params![window_owner(user), id as i64],
                )? > 0)
            })
            .await;
        self.changed(result)
    }

    /// Every stored window (ended ones are deleted when they end).
    pub async fn all_windows(&self) -> Result<Vec<MaintenanceWindow>, StoreError> {
        self.call(|conn| {
            json_rows(
                conn,
                "maintenances",
                "SELECT owner || '/' || id, body FROM maintenances ORDER BY owner, id",
                [],
            )
        })
        .await
    }

    /// One owner's window: found, gone (ended or deleted), or never issued.
    pub async fn get_window(&self, user: Option<Uuid>, id: u64) -> Result<Lookup<MaintenanceWindow>, StoreError> {
        self.read(move |conn| {
            let owner = window_owner(user);
            if let Some(found) = json_row(
                conn,
                "maintenances",
                "SELECT owner || '/' || id, body FROM maintenances WHERE owner = ?1 AND id = ?2",
                params![owner, id as i64],
            )? {
                return Ok(Lookup::Found(found));
            }
            let last: Option<i64> = conn
                .query_row(
                    "SELECT last_id FROM maintenance_ids WHERE owner = ?1",
                    params![owner],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(match last {
                Some(last) if id > 0 && id as i64 <= last => Lookup::Gone,
                _ => Lookup::NotFound,
            })
        })
        .await
    }
}

pub(super) fn window_owner(user: Option<Uuid>) -> String {
    user.map(|u| u.to_string()).unwrap_or_else(|| "operator".into())
}
