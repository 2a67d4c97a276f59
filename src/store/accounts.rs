//! Accounts and their contacts. An account's uuid and login are each
//! unique; its attributes are a JSON object of strings (those ending in
//! `email` or `webhook` are contacts too, see `model::AccountBook`). Stored
//! contacts are kept per account by name (the implicit `email` is not
//! stored).

use super::sql::{params, OptionalExtension};
use uuid::Uuid;

use super::{json_rows, stored, stored_uuid, Store, StoreError};
use crate::model::{Account, Contact, EpochMs};

impl Store {
    pub async fn create_account(&self, account: Account, now: EpochMs) -> Result<Account, StoreError> {
        self.call(move |conn| {
            let exists: Option<String> = conn
                .query_row(
                    "SELECT uuid FROM accounts WHERE uuid = ?1 OR login = ?2",
                    params![account.uuid.to_string(), account.login],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::Conflict(format!("account {}", account.login)));
            }
            conn.execute(
                "INSERT INTO accounts (uuid, login, email, created, operator, attributes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    account.uuid.to_string(),
                    account.login,
                    account.email,
                    now,
                    account.operator,
                    serde_json::to_string(&account.attributes)?
                ],
            )?;
            Ok(account)
        })
        .await
    }

    /// Makes an account an operator's (its probes may watch any machine).
    pub async fn make_operator(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                "UPDATE accounts SET operator = 1 WHERE uuid = ?1",
                params![uuid.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    /// Replaces an account's login, email, attributes and operator flag (its
    /// uuid stays).
    /// `None` if there is no such account; a login another account has is a
    /// [`StoreError::Conflict`].
    pub async fn update_account(&self, account: Account) -> Result<Option<Account>, StoreError> {
        self.call(move |conn| {
            let taken: Option<String> = conn
                .query_row(
                    "SELECT uuid FROM accounts WHERE login = ?1 AND uuid <> ?2",
                    params![account.login, account.uuid.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            if taken.is_some() {
                return Err(StoreError::Conflict(format!("account {}", account.login)));
            }
            let changed = conn.execute(
                "UPDATE accounts SET login = ?2, email = ?3, attributes = ?4, operator = ?5 WHERE uuid = ?1",
                params![
                    account.uuid.to_string(),
                    account.login,
                    account.email,
                    serde_json::to_string(&account.attributes)?,
                    account.operator
                ],
            )?;
            Ok((changed > 0).then_some(account))
        })
        .await
    }

    /// Finds an account by uuid or login.
    pub async fn get_account(&self, key: String) -> Result<Option<Account>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT uuid, login, email, operator, attributes FROM accounts WHERE uuid = ?1 OR login = ?1",
                params![key],
                account_row,
            )
            .optional()?
            .transpose()
        })
        .await
    }

    pub async fn all_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare("SELECT uuid, login, email, operator, attributes FROM accounts")?;
            let rows = stmt.query_map([], account_row)?;
            rows.map(|row| row?).collect()
        })
        .await
    }

    // ---- contacts ----

    pub async fn put_contact(&self, user: Uuid, contact: Contact) -> Result<Contact, StoreError> {
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO contacts (user, name, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user, name) DO UPDATE SET body = ?3",
                params![user.to_string(), contact.name, serde_json::to_string(&contact)?],
            )?;
            Ok(contact)
        })
        .await
    }

    /// An account's stored contacts (without the implicit `email`).
    pub async fn list_contacts(&self, user: Uuid) -> Result<Vec<Contact>, StoreError> {
        self.read(move |conn| {
            json_rows(
                conn,
                "contacts",
                "SELECT user || '/' || name, body FROM contacts WHERE user = ?1 ORDER BY name",
                params![user.to_string()],
            )
        })
        .await
    }

    /// Every stored contact, by account.
    pub async fn all_contacts(&self) -> Result<Vec<(Uuid, Contact)>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare("SELECT user, name, body FROM contacts")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })?;
            let mut contacts = Vec::new();
            for row in rows {
                let (user, name, body) = row?;
                let key = format!("{user}/{name}");
                contacts.push((stored_uuid("contacts", &key, &user)?, stored("contacts", &key, &body)?));
            }
            Ok(contacts)
        })
        .await
    }

    pub async fn delete_contact(&self, user: Uuid, name: String) -> Result<bool, StoreError> {
        self.call(move |conn| {
            Ok(conn.execute(
                "DELETE FROM contacts WHERE user = ?1 AND name = ?2",
                params![user.to_string(), name],
            )? > 0)
        })
        .await
    }
}

fn account_row(r: &super::sql::Row) -> Result<Result<Account, StoreError>, StoreError> {
    let uuid: String = r.get(0)?;
    let login: String = r.get(1)?;
    let email: String = r.get(2)?;
    let operator: bool = r.get(3)?;
    let attributes: String = r.get(4)?;
    Ok(stored_uuid("accounts", &uuid, &uuid).and_then(|key| {
        Ok(Account {
            uuid: key,
            login,
            email,
            operator,
            attributes: stored("accounts", &uuid, &attributes)?,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreadable_uuid_is_an_error_naming_the_table_and_row() {
        let store = Store::for_test();
        store
            .call(|conn| {
                conn.execute(
                    "INSERT INTO accounts (uuid, login, email, created) VALUES ('not-a-uuid', 'mallory', 'm@example.com', 0)",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let err = store.get_account("mallory".into()).await.unwrap_err();
        match &err {
            StoreError::Corrupt { table, key, reason } => {
                assert_eq!((*table, key.as_str()), ("accounts", "not-a-uuid"));
                assert!(reason.contains("is not a uuid"), "{reason}");
            }
            other => panic!("expected a corrupt row, got {other}"),
        }
        assert!(store.all_accounts().await.is_err(), "never the nil uuid");
    }
    #[actix_rt::test]
    async fn accounts_are_found_by_uuid_or_login_and_unique() {
        let store = Store::for_test();
        let account = Account {
            uuid: Uuid::new_v4(),
            login: "alice".into(),
            email: "alice@example.com".into(),
            operator: false,
            attributes: [("pagerdutyemail".to_string(), "pd@example.com".to_string())].into(),
        };
        store.create_account(account.clone(), 0).await.unwrap();
        assert_eq!(store.get_account("alice".into()).await.unwrap(), Some(account.clone()));
        assert_eq!(
            store.get_account(account.uuid.to_string()).await.unwrap(),
            Some(account.clone())
        );
        assert!(matches!(
            store.create_account(account, 0).await,
            Err(StoreError::Conflict(_))
        ));
    }
}
