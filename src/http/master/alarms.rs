//! Operators' actions on alarms: `POST …/alarms/:id?action=` and `DELETE`.
//! Both go through the monitor's alarm actor, which owns the open alarm.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::MasterApi;
use crate::actors::alarm::{AlarmCommand, CommandError};
use crate::actors::router::ForMonitor;
use crate::http::{drain, ApiError};
use crate::rules::AlarmAction;

#[derive(Deserialize)]
pub(super) struct ActionQuery {
    action: Option<String>,
}

async fn command(
    api: &MasterApi,
    account: &str,
    id: &str,
    command: impl FnOnce(u64) -> AlarmCommand,
) -> Result<(), ApiError> {
    let account = api.account(account).await?;
    let alarm = api.alarm(account.uuid, id).await?;
    api.command_alarm(&alarm, command(alarm.id)).await
}

impl MasterApi {
    /// Has the actor of the alarm's monitor, which owns the open alarm,
    /// carry out `command` (the API's and the web page's actions).
    pub(crate) async fn command_alarm(
        &self,
        alarm: &crate::model::Alarm,
        command: AlarmCommand,
    ) -> Result<(), ApiError> {
        let result = self
            .router()?
            .send(ForMonitor {
                monitor: alarm.monitor(),
                command,
            })
            .await
            .map_err(|e| ApiError::ServiceUnavailable(format!("event router: {e}")))?;
        result.map_err(|e| match e {
            CommandError::Missing(id) => ApiError::Gone(format!("alarm {id} was deleted or expunged")),
            CommandError::Store(why) => ApiError::Internal(why),
        })
    }
}

/// `POST /pub/:account/alarms/:id?action=close|reopen|suppress|unsuppress`:
/// 202, silent (nobody is notified).
pub(super) async fn act_on_alarm(
    api: web::Data<MasterApi>,
    path: web::Path<(String, String)>,
    query: web::Query<ActionQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    drain(payload).await?;
    let (account, id) = path.into_inner();
    let action = action_of(&query)?;
    command(&api, &account, &id, |id| AlarmCommand::Act { id, action }).await?;
    Ok(HttpResponse::Accepted().finish())
}

/// The `action` the query asks for: required, one of Amon's four.
pub(super) fn action_of(query: &ActionQuery) -> Result<AlarmAction, ApiError> {
    match query.action.as_deref() {
        None | Some("") => Err(ApiError::MissingParameter("action is required".into())),
        Some(text) => AlarmAction::parse(text).ok_or_else(|| {
            ApiError::InvalidArgument(format!(
                "action {text:?} is invalid: expected close, reopen, suppress or unsuppress"
            ))
        }),
    }
}

/// `DELETE /pub/:account/alarms/:id`: 204; the id answers 410 from now on.
pub(super) async fn delete_alarm(
    api: web::Data<MasterApi>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    drain(payload).await?;
    let (account, id) = path.into_inner();
    command(&api, &account, &id, |id| AlarmCommand::Delete { id }).await?;
    Ok(HttpResponse::NoContent().finish())
}
