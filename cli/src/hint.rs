//! The CLI's half of an error message: the library says what failed and
//! what to do in its own terms; this names the `chittysync` command or flag
//! that does it, printed as `hint: …` under the error.

use std::error::Error;

use chittysync::{
    AdapterError, ExportError, LookupError, MirrorError, PeerError, ProveError, StoreError,
    VerifyError, WriteError,
};

/// The CLI hint for the first error in `e`'s chain that has one.
pub(crate) fn hint(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(of)
}

/// The CLI hint for one error (not its causes), if it has one.
pub(crate) fn of(e: &(dyn Error + 'static)) -> Option<String> {
    if let Some(e) = e.downcast_ref::<LookupError>() {
        lookup(e)
    } else if let Some(e) = e.downcast_ref::<WriteError>() {
        write(e)
    } else if let Some(e) = e.downcast_ref::<MirrorError>() {
        mirror(e)
    } else if let Some(e) = e.downcast_ref::<PeerError>() {
        peer(e)
    } else if let Some(e) = e.downcast_ref::<ProveError>() {
        prove(e)
    } else if let Some(e) = e.downcast_ref::<ExportError>() {
        export(e)
    } else if let Some(e) = e.downcast_ref::<VerifyError>() {
        match e {
            VerifyError::Lookup(e) => lookup(e),
            VerifyError::InvalidRecords { registry, .. } => Some(format!(
                "`chittysync conflicts {registry}` lists them; `chittysync put` a valid value, or change the schema with `chittysync registry set-schema`"
            )),
            _ => None,
        }
    } else if let Some(e) = e.downcast_ref::<AdapterError>() {
        adapter(e)
    } else if let Some(e) = e.downcast_ref::<StoreError>() {
        store(e)
    } else {
        None
    }
}

fn lookup(e: &LookupError) -> Option<String> {
    match e {
        LookupError::NotFound { .. } => Some(
            "`chittysync registry ls` lists the registries here; `chittysync import FILE` brings one from a bundle"
                .into(),
        ),
        LookupError::Store(e) => store(e),
        _ => None,
    }
}

fn write(e: &WriteError) -> Option<String> {
    match e {
        WriteError::NotPermitted {
            registry,
            key,
            needed,
            ..
        } => Some(format!(
            "an admin can run `chittysync members add {registry} {key} --role {needed}`"
        )),
        WriteError::BadRecordId { .. } | WriteError::NotFound { .. } => Some(
            "`chittysync ls REGISTRY` lists the records' ids; `chittysync put REGISTRY field=value` without an id creates a record with a new one".into(),
        ),
        WriteError::Store(e) => store(e),
        _ => None,
    }
}

fn mirror(e: &MirrorError) -> Option<String> {
    match e {
        MirrorError::NoBinding { .. } => Some("`chittysync adapter ls` lists them".into()),
        MirrorError::NotWriter { registry, key, .. } => Some(format!(
            "an admin can run `chittysync members add {registry} {key} --role writer`"
        )),
        MirrorError::TooManyDeletes { .. } => Some(
            "check the plan with --dry-run, then rerun with --allow-deletes if that is intended"
                .into(),
        ),
        MirrorError::BadBinding { reason, .. } if reason.contains("holds a password") => {
            Some("give the variable's name with `chittysync adapter add … --secret-env VAR`".into())
        }
        MirrorError::BadBinding { reason, .. } if reason.contains("a binding of that name") => {
            Some("`chittysync adapter rm NAME` removes the old one".into())
        }
        MirrorError::Adapter { source, .. } => adapter(source),
        MirrorError::Stopped { binding, .. } => Some(format!(
            "run `chittysync sync {binding}` again once the server answers; `chittysync adapter show {binding}` lists the rows left"
        )),
        MirrorError::Lookup(e) => lookup(e),
        MirrorError::Write(e) => write(e),
        MirrorError::Store(e) => store(e),
        _ => None,
    }
}

fn peer(e: &PeerError) -> Option<String> {
    match e {
        PeerError::Connect { .. } => {
            Some("`chittysync serve` must be running at that address".into())
        }
        // The reasons the key policy gives (see the core's peer session).
        PeerError::Refused { reason, .. } if reason.contains("was expected") => Some(
            "`chittysync whoami` on the peer prints its key; pass it with --key".into(),
        ),
        PeerError::Refused { reason, .. } if reason.contains("pinned to key") => Some(
            "if the peer's key really changed, pass its new key with --key (`chittysync whoami` on the peer prints it)"
                .into(),
        ),
        PeerError::RefusedByPeer { reason, .. } if reason.contains("not a member of any registry") => Some(
            "the hub's operator can start it with `chittysync serve --allow KEY`, or `--allow-create KEY` to take registries this replica created (`chittysync whoami` prints KEY)"
                .into(),
        ),
        PeerError::Store(e) => store(e),
        _ => None,
    }
}

/// The CLI hint for a registry the peer refused in a sync that otherwise
/// went through (a [`chittysync::PeerRegistryReport`]'s `refused`).
pub(crate) fn refused_registry(reason: &str) -> Option<String> {
    if reason.contains("takes no new registries") {
        Some("the hub's operator can start it with `chittysync serve --allow-create KEY` (`chittysync whoami` prints KEY)".into())
    } else if reason.contains("as many new registries") {
        Some("the hub's operator can raise `chittysync serve --create-quota`".into())
    } else {
        None
    }
}

fn prove(e: &ProveError) -> Option<String> {
    match e {
        ProveError::UnknownChange { .. } => {
            Some("`chittysync audit REGISTRY` lists the changes of a registry".into())
        }
        ProveError::BadSize { .. } => Some("run `chittysync checkpoint` first".into()),
        ProveError::Store(e) => store(e),
        _ => None,
    }
}

fn export(e: &ExportError) -> Option<String> {
    match e {
        ExportError::MissingSignature { .. } => {
            Some("`chittysync verify` names every damaged change".into())
        }
        ExportError::Store(e) => store(e),
        _ => None,
    }
}

fn store(e: &StoreError) -> Option<String> {
    match e {
        StoreError::Corrupt { .. } => {
            Some("`chittysync verify` re-checks the whole replica and names the damage".into())
        }
        _ => None,
    }
}

fn adapter(e: &AdapterError) -> Option<String> {
    let reason = match e {
        AdapterError::Mismatch { reason, .. } | AdapterError::Request { reason, .. } => {
            reason.as_str()
        }
        _ => "",
    };
    let flag = [
        (
            "have the binding create",
            "`adapter add … --create` does that",
        ),
        (
            "have the binding write the headers",
            "`adapter add … --create` does that",
        ),
        ("as its id column", "`adapter add … --id-column COLUMN`"),
        // "map the field to another column in the binding", "map the
        // fields to existing headers in the binding"; not a Notion 401's
        // "check the integration token in the binding's secret variable".
        ("map the field", "`adapter add … --map FIELD=COLUMN`"),
        ("pull-only", "`adapter add … --direction pull`"),
        ("smaller batch size", "run with a smaller `--batch-size`"),
    ]
    .into_iter()
    .find(|(said, _)| reason.contains(said));
    if let Some((_, hint)) = flag {
        return Some(hint.into());
    }
    match e {
        AdapterError::Config(reason) if reason.contains("secret_env") || reason.contains("`url`") => {
            Some(
                "`chittysync adapter add … --secret-env VAR` names the variable; `--url` gives a URL without a password"
                    .into(),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(reason: &str) -> AdapterError {
        AdapterError::Request {
            system: "notion".into(),
            table: "db".into(),
            action: "query".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn a_refused_token_is_not_answered_with_a_column_mapping() {
        let refused = request(
            "401 unauthorized; check the integration token in the binding's secret variable",
        );
        assert_eq!(adapter(&refused), None);
    }

    #[test]
    fn a_missing_column_is_answered_with_a_mapping() {
        let missing = AdapterError::Mismatch {
            system: "postgres".into(),
            table: "services".into(),
            reason: "it has no column port; add the column, or map the field to another column in the binding".into(),
        };
        assert_eq!(
            adapter(&missing).as_deref(),
            Some("`adapter add … --map FIELD=COLUMN`")
        );
        let headers = request(
            "row 1 lacks the header(s) port; type them into row 1, or map the fields to existing headers in the binding",
        );
        assert!(adapter(&headers).unwrap().contains("--map"));
    }
}
