//! Accounts: `POST /accounts` and `PUT /accounts/:account` (operators),
//! `GET /pub/:account`.
//!
//! An account may carry `attributes`, an object of strings, as the
//! reference's UFDS person carried extra attributes. One whose name ends in
//! `email` or `webhook` is also a contact of that medium (see
//! [`AttributeUse`]), so its value must be an email address or an http(s)
//! URL; one ending in `phone` is kept but is no contact (we place no calls).

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::probes::{address_error, valid_contact_name};
use super::MasterApi;
use crate::actors::router::AccountChanged;
use crate::http::{decode_json, read_body, read_json, ApiError, FieldError, MAX_BODY};
use crate::model::{Account, AccountBook, AttributeUse, RESERVED_ATTRIBUTES};

/// Most attributes an account may have, and the longest value: enough for
/// any contact list, small enough that every alarm actor may hold a copy.
const MAX_ATTRIBUTES: usize = 100;
const MAX_ATTRIBUTE_VALUE: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccountBody {
    login: Option<String>,
    email: Option<String>,
    uuid: Option<Uuid>,
    attributes: Option<BTreeMap<String, String>>,
    /// An operator account's probes may watch any machine and compute nodes.
    operator: Option<bool>,
}

fn valid_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 64
        && login.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && Uuid::parse_str(login).is_err()
}

/// Turns a body into the account `uuid`, or says every field that is wrong.
pub(super) fn validate_account(uuid: Uuid, body: AccountBody) -> Result<Account, ApiError> {
    let mut errors = Vec::new();
    match body.login.as_deref() {
        None => errors.push(FieldError::missing("login")),
        Some(login) if !valid_login(login) => errors.push(FieldError::invalid(
            "login",
            "login must be 1-64 characters of letters, digits, '_', '.', '-' and not a uuid",
        )),
        _ => {}
    }
    match body.email.as_deref() {
        None => errors.push(FieldError::missing("email")),
        Some(email) => {
            if let Some(why) = address_error(crate::model::Medium::Email, email) {
                errors.push(FieldError::invalid("email", why));
            }
        }
    }
    let attributes = body.attributes.unwrap_or_default();
    attribute_errors(&attributes, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(Account {
        uuid,
        login: body.login.unwrap_or_default(),
        email: body.email.unwrap_or_default().trim().to_string(),
        operator: body.operator.unwrap_or(false),
        attributes,
    })
}

/// What is wrong with attributes, one error per attribute, each named
/// `attributes.<name>`.
fn attribute_errors(attributes: &BTreeMap<String, String>, errors: &mut Vec<FieldError>) {
    if attributes.len() > MAX_ATTRIBUTES {
        errors.push(FieldError::invalid(
            "attributes",
            format!("an account has at most {MAX_ATTRIBUTES} attributes"),
        ));
    }
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for (name, value) in attributes {
        let field = format!("attributes.{name}");
        if !valid_contact_name(name) {
            errors.push(FieldError::invalid(
                &field,
                "attribute names are 1-64 letters, digits, '_', '.', '-'",
            ));
            continue;
        }
        if RESERVED_ATTRIBUTES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            errors.push(FieldError::invalid(
                &field,
                format!("{name:?} is a field of the account itself, not an attribute"),
            ));
            continue;
        }
        // Contacts name attributes regardless of case, as UFDS did.
        if let Some(other) = seen.insert(name.to_ascii_lowercase(), name) {
            errors.push(FieldError::invalid(
                &field,
                format!("attributes {other:?} and {name:?} differ only in case"),
            ));
            continue;
        }
        if value.len() > MAX_ATTRIBUTE_VALUE {
            errors.push(FieldError::invalid(
                &field,
                format!("attribute values are at most {MAX_ATTRIBUTE_VALUE} bytes"),
            ));
            continue;
        }
        if let AttributeUse::Contact(medium) = AttributeUse::of(name) {
            if let Some(why) = address_error(medium, value) {
                errors.push(FieldError::invalid(&field, why));
            }
        }
    }
}

/// `POST /accounts` (operators): `login`, `email`, optional `uuid` and
/// `attributes`.
pub(super) async fn create_account(api: web::Data<MasterApi>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let body: AccountBody = read_json(payload, MAX_BODY, "account").await?;
    let uuid = body.uuid.unwrap_or_else(Uuid::new_v4);
    let account = validate_account(uuid, body)?;
    let account = api
        .store
        .create_account(account, api.clock.now_ms())
        .await
        .map_err(conflict)?;
    tell_router(&api, account.clone()).await?;
    Ok(HttpResponse::Ok().json(account))
}

/// `PUT /accounts/:account` (operators): the body replaces the account's
/// login, email and attributes, as on create; its `uuid` may be repeated,
/// not changed. An attribute that a probe or group names as its contact
/// cannot go (unless a stored contact of that name takes over).
pub(super) async fn put_account(
    api: web::Data<MasterApi>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, MAX_BODY).await?;
    let old = api.account(&path).await?;
    let body: AccountBody = decode_json(&body, "account")?;
    if body.uuid.is_some_and(|uuid| uuid != old.uuid) {
        return Err(ApiError::validation(vec![FieldError::invalid(
            "uuid",
            format!("uuid cannot change: this account is {}", old.uuid),
        )]));
    }
    // Absent, the account stays what it was.
    let operator = body.operator.unwrap_or(old.operator);
    let mut account = validate_account(old.uuid, body)?;
    account.operator = operator;
    let book = AccountBook {
        contacts: api
            .store
            .list_contacts(account.uuid)
            .await?
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect(),
        account,
    };
    let lost = api.contacts_lost(&book).await?;
    if !lost.is_empty() {
        return Err(ApiError::validation(vec![FieldError::invalid(
            "attributes",
            format!(
                "contacts still in use would no longer exist: {}",
                lost.iter()
                    .map(|(name, who)| format!("{name:?} ({who})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )]));
    }
    let account = api
        .store
        .update_account(book.account)
        .await
        .map_err(conflict)?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("no such account: {:?}", path.as_str())))?;
    tell_router(&api, account.clone()).await?;
    Ok(HttpResponse::Ok().json(account))
}

/// `GET /pub/:account`: uuid, login, email and attributes.
pub(super) async fn get_account(api: web::Data<MasterApi>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(api.account(&path).await?))
}

fn conflict(e: crate::store::StoreError) -> ApiError {
    match e {
        crate::store::StoreError::Conflict(what) => ApiError::InvalidArgument(format!("{what} already exists")),
        other => other.into(),
    }
}

async fn tell_router(api: &MasterApi, account: Account) -> Result<(), ApiError> {
    api.router()?
        .send(AccountChanged(account))
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("event router: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(attributes: serde_json::Value) -> AccountBody {
        serde_json::from_value(serde_json::json!({
            "login": "alice", "email": "alice@example.com", "attributes": attributes,
        }))
        .unwrap()
    }

    fn fields(result: Result<Account, ApiError>) -> Vec<String> {
        match result {
            Err(ApiError::ValidationFailed { errors, .. }) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected ValidationFailed, got {other:?}"),
        }
    }

    #[test]
    fn contact_attributes_need_an_address_of_their_medium_and_others_anything() {
        let account = validate_account(
            Uuid::nil(),
            body(serde_json::json!({
                "pagerdutyemail": "pd@example.com",
                "testwebhook": "http://127.0.0.1:9/hook",
                "workPhone": "+1 555 0100",
                "cn": "Alice Liddell",
            })),
        )
        .unwrap();
        assert_eq!(account.attributes.len(), 4);
        assert_eq!(
            fields(validate_account(
                Uuid::nil(),
                body(serde_json::json!({
                    "pagerdutyemail": "not an address",
                    "testwebhook": "ftp://hooks.example.com/",
                    "secondaryEmail": "",
                    "cn": "Alice",
                })),
            )),
            [
                "attributes.pagerdutyemail",
                "attributes.secondaryEmail",
                "attributes.testwebhook"
            ]
        );
    }

    #[test]
    fn attribute_names_are_contact_names_and_not_the_accounts_own_fields() {
        assert_eq!(
            fields(validate_account(
                Uuid::nil(),
                body(serde_json::json!({
                    "Email": "other@example.com",
                    "has space": "x",
                    "opsEmail": "ops@example.com",
                    "opsemail": "ops2@example.com",
                })),
            )),
            ["attributes.Email", "attributes.has space", "attributes.opsemail"]
        );
    }
}
