//! `chittysync token add|ls|rm`: API tokens for the HTTP service, and
//! `chittysync health URL` for scripts and probes.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use chittysync::{Role, Token, TokenSpec};
use clap::{Args, Subcommand};
use serde_json::json;

use super::Globals;
use super::adapter::parse_interval;
use crate::output::{self, outln};

#[derive(Subcommand)]
pub(crate) enum TokenCmd {
    /// Add a token for programs that use the HTTP API; prints its secret once.
    Add(AddArgs),
    /// List tokens: name, registries, role, created, expires, last used.
    Ls,
    /// Remove a token: it stops working and its key leaves its registries.
    Rm(RmArgs),
}

#[derive(Args)]
pub(crate) struct AddArgs {
    /// The token's name, shown in the audit log of what it writes.
    name: String,
    /// A registry the token may use, by name or id (repeatable).
    #[arg(long = "registry", required = true, value_name = "REGISTRY")]
    registries: Vec<String>,
    /// Its role in each registry: reader, writer or admin.
    #[arg(long, default_value = "reader")]
    role: String,
    /// How long it is valid (30d, 12h, …); without it, until removed.
    #[arg(long, value_parser = parse_interval)]
    expires: Option<Duration>,
}

#[derive(Args)]
pub(crate) struct RmArgs {
    /// The token's name.
    name: String,
}

#[derive(Args)]
pub(crate) struct HealthArgs {
    /// The service's base URL, e.g. http://127.0.0.1:8080 (its /health is asked),
    /// or a full URL to ask.
    url: String,
    /// Also require the replica to be writable (asks /ready).
    #[arg(long)]
    ready: bool,
    /// Give up after this long.
    #[arg(long, default_value = "5s", value_parser = parse_interval)]
    timeout: Duration,
}

pub(crate) fn run(globals: &Globals, cmd: TokenCmd) -> Result<()> {
    let replica = globals.open()?;
    match cmd {
        TokenCmd::Add(args) => {
            let role: Role = args
                .role
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--role: {e}"))?;
            let added = replica.add_token(&TokenSpec {
                name: args.name,
                registries: args.registries,
                role,
                expires_in: args.expires,
            })?;
            if globals.json {
                let mut view = token_json(&replica, &added.token);
                view["secret"] = added.secret.clone().into();
                output::json(&view)?;
            } else {
                outln!("{}", added.secret)?;
                eprintln!(
                    "token '{}' added ({} of {}); the line above is its secret, shown only now: keep it in your pipeline's secret store",
                    added.token.name,
                    added.token.role,
                    registry_names(&replica, &added.token).join(", ")
                );
            }
        }
        TokenCmd::Ls => {
            let tokens = replica.tokens()?;
            if globals.json {
                output::json(&tokens.iter().map(|t| token_json(&replica, t)).collect())?;
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            registry_names(&replica, t).join(","),
                            t.role.to_string(),
                            time_text(Some(t.created_at)),
                            time_text(t.expires_at),
                            time_text(t.last_used_at),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "name",
                        "registries",
                        "role",
                        "created",
                        "expires",
                        "last used",
                    ],
                    &rows,
                )?;
            }
        }
        TokenCmd::Rm(args) => {
            let removed = replica.remove_token(&args.name)?;
            if globals.json {
                output::json(&json!({ "removed": removed.name, "key": removed.key.to_string() }))?;
            } else {
                outln!(
                    "token '{}' removed; its key {} is no longer a member of its registries",
                    removed.name,
                    removed.key.short()
                )?;
            }
        }
    }
    Ok(())
}

fn registry_names(replica: &chittysync::Replica, token: &Token) -> Vec<String> {
    token
        .registries
        .iter()
        .map(|id| {
            replica
                .registry_by_id(*id)
                .map_or_else(|_| id.to_string(), |r| r.name())
        })
        .collect()
}

fn token_json(replica: &chittysync::Replica, t: &Token) -> serde_json::Value {
    json!({
        "name": t.name,
        "key": t.key.to_string(),
        "role": t.role.name(),
        "registries": registry_names(replica, t),
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "last_used_at": t.last_used_at,
    })
}

/// A time, or `never`.
fn time_text(ms: Option<i64>) -> String {
    ms.map_or_else(|| "never".into(), super::audit::time_text)
}

/// `chittysync health URL`: exit 0 when the service answers healthy.
pub(crate) fn health(globals: &Globals, args: HealthArgs) -> Result<()> {
    let url = if args.url.trim_end_matches('/').ends_with("/health")
        || args.url.trim_end_matches('/').ends_with("/ready")
    {
        args.url.clone()
    } else {
        format!(
            "{}/{}",
            args.url.trim_end_matches('/'),
            if args.ready { "ready" } else { "health" }
        )
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let answer = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(args.timeout)
            .build()
            .context("making an HTTP client")?;
        let response = client.get(&url).send().await;
        anyhow::Ok(response)
    })?;
    match answer {
        Ok(response) if response.status().is_success() => {
            if globals.json {
                output::json(
                    &json!({ "url": url, "healthy": true, "status": response.status().as_u16() }),
                )?;
            } else {
                outln!("{url}: healthy ({})", response.status())?;
            }
            Ok(())
        }
        Ok(response) => bail!("{url}: unhealthy ({})", response.status()),
        Err(e) => bail!("{url}: no answer ({})", without_url(&e)),
    }
}

/// reqwest's error text without the URL it repeats.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
