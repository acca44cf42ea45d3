//! `chittysync audit`: who changed what, when, with which signature.

use anyhow::{Result, anyhow, bail};
use chittysync::{AuditEntry, AuditFilter, PublicKey, Registry, SignatureStatus};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Globals;
use crate::output::{self, StdoutError, outln};

/// Arguments of `chittysync audit`.
#[derive(clap::Args)]
pub(crate) struct AuditArgs {
    /// Registry name or id.
    registry: String,
    /// Only changes to this record (and only what they did to it).
    #[arg(long, value_name = "ID")]
    record: Option<String>,
    /// Only changes signed by this member: a public key, its alias, or a unique key prefix.
    #[arg(long, value_name = "KEY")]
    author: Option<String>,
    /// Only changes at or after this time: RFC 3339 (2026-11-23T10:00:00Z), a date
    /// (2026-11-23, UTC) or ms since the epoch.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only changes before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
}

/// Prints the audit log as a table, or as JSON Lines with `--json`.
pub(crate) fn run(globals: &Globals, args: AuditArgs) -> Result<()> {
    let replica = globals.open()?;
    let reg = replica.registry(&args.registry)?;
    let mut query = AuditFilter::all();
    if let Some(id) = args.record {
        query = query.record(id);
    }
    if let Some(who) = &args.author {
        query = query.author(author(&reg, who)?);
    }
    if let Some(t) = &args.since {
        query = query.since(parse_time("--since", t)?);
    }
    if let Some(t) = &args.until {
        query = query.until(parse_time("--until", t)?);
    }
    let entries = reg.audit(&query)?;
    if globals.json {
        chittysync::export_jsonl(&entries, std::io::stdout().lock()).map_err(StdoutError::from)?;
    } else {
        table(&entries)?;
        outln!("{} change(s)", entries.len())?;
    }
    let untrusted = entries.iter().filter(|e| !e.signature.is_valid()).count();
    if untrusted > 0 {
        eprintln!(
            "warning: {untrusted} change(s) with an invalid or missing signature: the store was altered; `chittysync verify` names the damage"
        );
    }
    Ok(())
}

fn table(entries: &[AuditEntry]) -> Result<(), StdoutError> {
    let mut rows = Vec::new();
    for e in entries {
        let who = e.alias.clone().unwrap_or_else(|| e.author.short());
        let sig = match e.signature {
            SignatureStatus::Valid => "✓",
            SignatureStatus::Invalid => "✗ invalid",
            _ => "✗ missing",
        };
        let position = if e.position > 0 {
            e.position.to_string()
        } else {
            "-".into()
        };
        let mut what: Vec<String> = e
            .effects
            .iter()
            .map(|f| output::clip(&f.to_string(), 80))
            .collect();
        if what.is_empty() {
            what.push("(no change)".into());
        }
        if let Some(from) = provenance(e) {
            what.insert(0, output::clip(&format!("via {from}"), 80));
        }
        if let Some(by) = e.revoked_by {
            let by = by.to_string();
            what.insert(
                0,
                format!(
                    "REVOKED (author removed concurrently by change {})",
                    &by[..12]
                ),
            );
        }
        for (i, w) in what.into_iter().enumerate() {
            rows.push(if i == 0 {
                vec![
                    position.clone(),
                    time_text(e.time),
                    who.clone(),
                    sig.to_owned(),
                    w,
                ]
            } else {
                vec![
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    w,
                ]
            });
        }
    }
    output::table(&["pos", "time (UTC)", "author", "sig", "what"], &rows)
}

/// Where a change came from, when its message says more than the kind of
/// write: a mirror run's "sync from postgres table …, rows …", or what a
/// program writing with its own key recorded.
fn provenance(e: &AuditEntry) -> Option<&str> {
    const ROUTINE: [&str; 5] = [
        "write",
        "change members",
        "change aliases",
        "change schema",
        "create registry",
    ];
    e.message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty() && !ROUTINE.contains(m))
}

/// `2026-11-23T10:00:00Z` (to the second).
pub(crate) fn time_text(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// A time as ms since the epoch, from RFC 3339, a date or ms.
fn parse_time(flag: &str, text: &str) -> Result<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(text, &date) {
        return Ok(d.midnight().assume_utc().unix_timestamp() * 1000);
    }
    bail!(
        "{flag} '{text}' is not a time: give RFC 3339 (2026-11-23T10:00:00Z), a date (2026-11-23) or ms since the epoch"
    )
}

/// A member named by key, alias or unique key prefix.
fn author(reg: &Registry, who: &str) -> Result<PublicKey> {
    if let Ok(key) = who.parse::<PublicKey>() {
        return Ok(key);
    }
    let members = reg.members();
    if let Some(m) = members.iter().find(|m| m.alias.as_deref() == Some(who)) {
        return Ok(m.key);
    }
    let prefix = who.to_ascii_lowercase();
    let matching: Vec<PublicKey> = members
        .iter()
        .map(|m| m.key)
        .filter(|k| prefix.len() >= 4 && k.to_string().starts_with(&prefix))
        .collect();
    match matching.as_slice() {
        [key] => Ok(*key),
        [] => Err(anyhow!(
            "--author '{who}' is no member's key, alias or key prefix in '{}'; `chittysync members ls {}` lists them",
            reg.name(),
            reg.name()
        )),
        _ => bail!("--author '{who}' matches several members' keys; give more digits"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_from_rfc3339_dates_and_ms() {
        assert_eq!(
            parse_time("--since", "2026-11-23T10:00:00Z").unwrap(),
            1_795_428_000_000
        );
        assert_eq!(
            parse_time("--since", "2026-11-23T11:00:00.250+01:00").unwrap(),
            1_795_428_000_250
        );
        assert_eq!(
            parse_time("--since", "2026-11-23").unwrap(),
            1_795_392_000_000
        );
        assert_eq!(
            parse_time("--since", "1795428000000").unwrap(),
            1_795_428_000_000
        );
        let err = parse_time("--until", "yesterday").unwrap_err().to_string();
        assert!(err.contains("--until 'yesterday'"), "{err}");
        assert_eq!(time_text(1_795_428_000_999), "2026-11-23T10:00:00Z");
    }
}
