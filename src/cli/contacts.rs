//! `amon contacts list|get|set|delete`: where an account's notifications go.

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};

use super::client::{encode, Request};
use super::table::{self, Table};
use super::{emit, ClientOpts, Ctx};

#[derive(Debug, Args)]
pub struct ContactsArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub verb: ContactsVerb,
}

#[derive(Debug, Subcommand)]
pub enum ContactsVerb {
    /// Lists the account's contacts.
    #[command(alias = "ls")]
    List,
    /// Shows one contact.
    #[command(alias = "show")]
    Get { name: String },
    /// Creates or replaces a contact.
    #[command(alias = "put", group(ArgGroup::new("medium").required(true).args(["email", "webhook"])))]
    Set {
        /// The name probes use in their `contacts` (`email` is the account's own).
        name: String,
        /// Notifications go by email to this address.
        #[arg(long, value_name = "ADDRESS")]
        email: Option<String>,
        /// Notifications are POSTed to this URL.
        #[arg(long, value_name = "URL")]
        webhook: Option<String>,
    },
    /// Deletes a contact.
    #[command(alias = "rm")]
    Delete { name: String },
}

/// The body of `PUT /pub/:account/contacts/:name`.
pub fn contact_body(email: Option<&str>, webhook: Option<&str>) -> anyhow::Result<Value> {
    match (email, webhook) {
        (Some(address), None) => Ok(json!({ "medium": "email", "address": address })),
        (None, Some(address)) => Ok(json!({ "medium": "webhook", "address": address })),
        _ => anyhow::bail!("give --email or --webhook"),
    }
}

fn contact_path(ctx: &Ctx, verb: &str, name: Option<&str>) -> anyhow::Result<String> {
    let rest = match name {
        Some(name) => format!("/contacts/{}", encode(name)),
        None => "/contacts".to_string(),
    };
    ctx.pub_path(&format!("contacts {verb}"), &rest)
}

pub async fn run(ctx: &Ctx, args: ContactsArgs) -> anyhow::Result<()> {
    match args.verb {
        ContactsVerb::List => {
            let contacts = ctx.client.json(&Request::get(contact_path(ctx, "list", None)?)).await?;
            emit(&if ctx.json {
                table::pretty(&contacts)
            } else {
                render_contacts(&contacts)
            });
        }
        ContactsVerb::Get { name } => {
            let contact = ctx
                .client
                .json(&Request::get(contact_path(ctx, "get", Some(&name))?))
                .await?;
            emit(&if ctx.json {
                table::pretty(&contact)
            } else {
                render_contact(&name, &contact)
            });
        }
        ContactsVerb::Set { name, email, webhook } => {
            let body = contact_body(email.as_deref(), webhook.as_deref())?;
            let answer = ctx
                .client
                .send(&Request::put(contact_path(ctx, "set", Some(&name))?, body.clone()))
                .await?;
            let contact = answer.unwrap_or(body);
            emit(&if ctx.json {
                table::pretty(&contact)
            } else {
                format!(
                    "contact {name}: {} {}\n",
                    table::text(contact.get("medium")),
                    table::text(contact.get("address"))
                )
            });
        }
        ContactsVerb::Delete { name } => {
            ctx.client
                .send(&Request::delete(contact_path(ctx, "delete", Some(&name))?))
                .await?;
            if !ctx.json {
                emit(&format!("contact {name} deleted\n"));
            }
        }
    }
    Ok(())
}

/// The contacts as (name, contact) pairs, from an array of contacts with a
/// `name` or an object keyed by name.
fn named(contacts: &Value) -> Vec<(String, &Value)> {
    let mut out: Vec<(String, &Value)> = match contacts {
        Value::Array(items) => items.iter().map(|c| (table::text(c.get("name")), c)).collect(),
        Value::Object(map) => map.iter().map(|(name, c)| (name.clone(), c)).collect(),
        _ => Vec::new(),
    };
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub fn render_contacts(contacts: &Value) -> String {
    let mut out = Table::new(&["NAME", "MEDIUM", "ADDRESS"]);
    for (name, contact) in named(contacts) {
        out.row(vec![
            name,
            table::text(contact.get("medium")),
            table::text(contact.get("address")),
        ]);
    }
    out.render()
}

pub fn render_contact(name: &str, contact: &Value) -> String {
    let name = contact.get("name").and_then(Value::as_str).unwrap_or(name);
    table::fields(&[
        ("contact", name.to_string()),
        ("medium", table::text(contact.get("medium"))),
        ("address", table::text(contact.get("address"))),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn set_needs_exactly_one_medium() {
        let parse = |args: &[&str]| Cli::try_parse_from(["amon", "contacts", "set"].iter().chain(args).copied());
        assert!(parse(&["ops"]).is_err());
        assert!(parse(&["ops", "--email", "a@b", "--webhook", "http://h"]).is_err());
        let Command::Contacts(ContactsArgs {
            verb: ContactsVerb::Set { name, email, webhook },
            ..
        }) = parse(&["ops", "--webhook", "http://hooks/amon"]).unwrap().command
        else {
            panic!("not contacts set")
        };
        assert_eq!(name, "ops");
        assert_eq!(
            contact_body(email.as_deref(), webhook.as_deref()).unwrap(),
            json!({ "medium": "webhook", "address": "http://hooks/amon" })
        );
        assert_eq!(
            contact_body(Some("ops@example.com"), None).unwrap(),
            json!({ "medium": "email", "address": "ops@example.com" })
        );
    }

    #[test]
    fn contact_tables() {
        let list = json!([
            { "name": "ops", "medium": "webhook", "address": "http://hooks/amon" },
            { "name": "email", "medium": "email", "address": "alice@example.com" },
        ]);
        insta::assert_snapshot!(render_contacts(&list), @r"
        NAME   MEDIUM   ADDRESS
        email  email    alice@example.com
        ops    webhook  http://hooks/amon
        ");
        let map = json!({ "ops": { "medium": "webhook", "address": "http://hooks/amon" } });
        assert_eq!(
            render_contacts(&map),
            "NAME  MEDIUM   ADDRESS\nops   webhook  http://hooks/amon\n"
        );
        assert_eq!(
            render_contact("ops", &map["ops"]),
            "contact:  ops\nmedium:   webhook\naddress:  http://hooks/amon\n"
        );
    }
}
