//! `assay keys create|list|revoke`: a project's scoped API keys, managed
//! on the database directly (the CLI is the audit log's `cli` actor).

use std::time::Duration;

use anyhow::{anyhow, bail};
use uuid::Uuid;

use crate::access::keys::{KeyRequest, issue};
use crate::access::{Actor, ApiKey, Scope};
use crate::config::Config;

/// What `assay keys create` asks for.
pub struct Create<'a> {
    pub project: Option<&'a str>,
    pub name: &'a str,
    pub scopes: Vec<Scope>,
    pub expires_in: Option<Duration>,
    pub test: bool,
}

/// Makes a key; returns it with its secret, shown this once.
pub async fn create(config: &Config, request: Create<'_>) -> anyhow::Result<(ApiKey, String)> {
    let project = config
        .project_named(request.project)
        .map_err(|e| anyhow!(e))?;
    let now = crate::now();
    let expires_at = request.expires_in.map(|d| crate::run::after(now, d));
    let key_request = KeyRequest {
        project: &project.name,
        name: request.name.trim(),
        scopes: request.scopes,
        expires_at,
        test: request.test,
        created_by: "cli",
    };
    if let Some(why) = key_request.refusal(now) {
        bail!("{why}");
    }
    let issued = issue(key_request, now);
    let store = crate::store::connect(&config.database).await?;
    store.create_key(&issued.key, &Actor::cli()).await?;
    Ok((issued.key, issued.secret))
}

pub async fn list(config: &Config, project: Option<&str>) -> anyhow::Result<Vec<ApiKey>> {
    let project = config.project_named(project).map_err(|e| anyhow!(e))?;
    let store = crate::store::connect(&config.database).await?;
    Ok(store.list_keys(&project.name).await?)
}

/// Revokes the key of `project` named by its id or its prefix.
pub async fn revoke(config: &Config, project: Option<&str>, key: &str) -> anyhow::Result<ApiKey> {
    let project = config.project_named(project).map_err(|e| anyhow!(e))?;
    let store = crate::store::connect(&config.database).await?;
    let id = match Uuid::parse_str(key) {
        Ok(id) => id,
        Err(_) => {
            let keys = store.list_keys(&project.name).await?;
            let found: Vec<&ApiKey> = keys.iter().filter(|k| k.prefix == key).collect();
            match found.as_slice() {
                [one] => one.id,
                [] => bail!(
                    "project `{}` has no key with the id or prefix `{key}`; `assay keys list` shows them",
                    project.name
                ),
                _ => bail!("several keys have the prefix `{key}`: name one by its id"),
            }
        }
    };
    Ok(store
        .revoke_key(&project.name, id, &Actor::cli(), crate::now())
        .await?)
}

/// The keys as a table for a terminal.
pub fn table(keys: &[ApiKey]) -> String {
    use std::fmt::Write as _;
    let now = crate::now();
    let mut out = String::from(
        "ID                                    PREFIX            NAME                  SCOPES                      STATE\n",
    );
    for key in keys {
        let state = key.state_text(now);
        let used = key.last_used_at.map_or_else(
            || "never used".to_owned(),
            |at| format!("last used {}", crate::time::rfc3339(&at)),
        );
        let _ = writeln!(
            out,
            "{:<37} {:<17} {:<21} {:<27} {state}, {used}",
            key.id,
            key.prefix,
            key.name,
            crate::access::keys::scopes_text(&key.scopes),
        );
    }
    out
}
