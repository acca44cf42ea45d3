//! Who may do what to a registry: roles now, revocations, and the checks
//! on local writes and imported changes.

use std::sync::Arc;

use automerge::ObjId;

use super::DocState;
use crate::document::Role;
use crate::document::policy::{creator_of, foreign_record};
use crate::document::revoke::Revocations;
use crate::error::{ImportError, WriteError};
use crate::identity::PublicKey;
use crate::schema::{RecordRule, Rule, ValidationError};
use crate::trust::SignedChange;

impl DocState {
    /// The role of `key` now, as the registry reads (revoked grants
    /// masked).
    pub(crate) fn role_now(&self, key: &PublicKey) -> Option<Role> {
        self.layout.role_now(self.view(), key)
    }

    /// The changes revoked by a concurrent removal of their author.
    pub(crate) fn revocations(&self) -> Arc<Revocations> {
        self.revoked.clone()
    }

    /// Under the `creator-or-admin` record rule, only a record's creator
    /// and admins may change it.
    pub(super) fn require_owner(
        &self,
        id: &str,
        copies: &[ObjId],
        author: &PublicKey,
    ) -> Result<(), WriteError> {
        if self.schema.schema.record_rule != RecordRule::CreatorOrAdmin || copies.is_empty() {
            return Ok(());
        }
        let creators: Vec<PublicKey> = copies.iter().filter_map(creator_of).collect();
        if creators.contains(author) {
            return Ok(());
        }
        if self.layout.role_now(self.view(), author) == Some(Role::Admin) {
            return Ok(());
        }
        Err(WriteError::NotOwner {
            registry: self.name.clone(),
            record: id.to_owned(),
            creator: creators
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
        })
    }

    pub(crate) fn require_role(&self, who: &PublicKey, needed: Role) -> Result<(), WriteError> {
        let role = self.layout.role_now(self.view(), who);
        let enough = match needed {
            Role::Admin => role == Some(Role::Admin),
            _ => role.is_some_and(Role::can_write),
        };
        if enough {
            Ok(())
        } else {
            Err(WriteError::NotPermitted {
                registry: self.name.clone(),
                key: who.to_string(),
                role: role.map(|r| r.name().to_owned()),
                needed: needed.name().to_owned(),
            })
        }
    }

    pub(super) fn invalid(
        &self,
        record: &str,
        field: &str,
        value: String,
        rule: Rule,
    ) -> WriteError {
        WriteError::Invalid(Box::new(ValidationError {
            registry: self.name.clone(),
            record: record.to_owned(),
            field: field.to_owned(),
            value,
            rule,
        }))
    }

    /// Checks that a change's author held a role allowing it, as of the
    /// change's own dependencies (so a later promotion or removal does not
    /// change the verdict). `admin_only` says why the change needs an admin,
    /// if it does (see [`Guard::admin_only`]).
    pub(super) fn authorise(
        &self,
        c: &SignedChange,
        admin_only: Option<&str>,
    ) -> Result<(), ImportError> {
        let refuse = |reason: String| ImportError::NotAuthorised {
            change: c.hash().to_string(),
            author: c.author.to_string(),
            reason,
        };
        match self.layout.role_at(&self.doc, &c.author, c.change.deps()) {
            Some(Role::Admin) => Ok(()),
            Some(Role::Writer) => match admin_only {
                Some(why) => Err(refuse(why.into())),
                None => match foreign_record(&self.doc, &self.layout, &c.change, &c.author) {
                    Some(record) => Err(refuse(format!(
                        "record {record} may be changed only by its creator or an admin"
                    ))),
                    None => Ok(()),
                },
            },
            Some(Role::Reader) => Err(refuse("readers cannot write".into())),
            None => Err(refuse("not a member of the registry".into())),
        }
    }
}
