//! API tokens: bearer secrets with which programs use a replica over HTTP.
//! Each token has a key of its own, a member of the token's registries with
//! the token's role, so what a program writes through it is signed by that
//! key. Only a hash of the secret is kept: it is returned once, when the
//! token is added.

use std::time::Duration;

use chittysync as core;

use crate::ChittyError;
use crate::replica::Replica;
use crate::types::Role;

/// A stored token (never its secret).
#[derive(Clone, Debug, uniffi::Record)]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// Its public key, a member of its registries.
    pub key: String,
    /// Its role in each registry.
    pub role: Role,
    /// The names of the registries it may use.
    pub registries: Vec<String>,
    /// When it was added (ms since the epoch).
    pub created_at: i64,
    /// When it stops working (ms since the epoch), if ever.
    pub expires_at: Option<i64>,
    /// When it was last used (ms since the epoch, to the minute), if ever.
    pub last_used_at: Option<i64>,
}

/// A token just added, with its secret: shown once, never stored.
#[derive(Clone, Debug, uniffi::Record)]
pub struct TokenAdded {
    /// Its name.
    pub name: String,
    /// Its public key, a member of its registries.
    pub key: String,
    /// Its role in each registry.
    pub role: Role,
    /// The names of the registries it may use.
    pub registries: Vec<String>,
    /// When it was added (ms since the epoch).
    pub created_at: i64,
    /// When it stops working (ms since the epoch), if ever.
    pub expires_at: Option<i64>,
    /// The bearer secret: give it to the program that will use the token.
    pub secret: String,
}

impl Replica {
    /// The token as crosses the boundary, its registries by name (by id if
    /// one is gone from this replica).
    fn token_info(&self, t: core::Token) -> TokenInfo {
        let registries = t
            .registries
            .iter()
            .map(|id| {
                self.core()
                    .registry_by_id(*id)
                    .map_or_else(|_| id.to_string(), |r| r.name())
            })
            .collect();
        TokenInfo {
            name: t.name,
            key: t.key.to_string(),
            role: t.role.into(),
            registries,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
        }
    }
}

#[uniffi::export]
impl Replica {
    /// Adds a token named `name` (letters, digits, `.`, `_`, `-`) that may
    /// use `registries` (names or ids; at least one) with `role`, valid for
    /// `expires_secs` seconds (none: until removed). This replica must be an
    /// admin of each registry. The secret is returned once, never stored.
    pub fn add_token(
        &self,
        name: String,
        registries: Vec<String>,
        role: Role,
        expires_secs: Option<u64>,
    ) -> Result<TokenAdded, ChittyError> {
        let added = self.core().add_token(&core::TokenSpec {
            name,
            registries,
            role: role.into(),
            expires_in: expires_secs.map(Duration::from_secs),
        })?;
        let t = self.token_info(added.token);
        Ok(TokenAdded {
            name: t.name,
            key: t.key,
            role: t.role,
            registries: t.registries,
            created_at: t.created_at,
            expires_at: t.expires_at,
            secret: added.secret,
        })
    }

    /// Every token, by name (never their secrets).
    pub fn tokens(&self) -> Result<Vec<TokenInfo>, ChittyError> {
        Ok(self
            .core()
            .tokens()?
            .into_iter()
            .map(|t| self.token_info(t))
            .collect())
    }

    /// Removes a token: its key leaves every registry it was a member of
    /// and its secret stops working. Returns what it was.
    pub fn remove_token(&self, name: String) -> Result<TokenInfo, ChittyError> {
        let removed = self.core().remove_token(&name)?;
        Ok(self.token_info(removed))
    }
}
