//! API tokens: bearer secrets with which programs use a replica over HTTP.
//!
//! Each token has a key of its own, made when the token is added and kept
//! beside the store (0600, like a binding's key). The key is made a member of
//! the token's registries with the token's role, so what a program writes
//! through a token is signed by the token's key and the audit log shows which
//! token changed what. Only a hash of the secret is stored; a lost secret
//! cannot be recovered, only replaced.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::clock::now_ms;
use crate::error::{LookupError, StoreError, WriteError};
use crate::identity::{Identity, IdentityError, PublicKey};
use crate::ids::RegistryId;
use crate::registry::Role;
use crate::replica::Replica;
use crate::store::TokenRow;

/// What every secret starts with, so a leaked one is recognisable.
const SECRET_PREFIX: &str = "cst_";

/// Use is recorded at most this often per token (every request would be a
/// durable write).
const TOUCH_EVERY_MS: i64 = 60_000;

/// What a new token may do.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    /// Its name: letters, digits, `.`, `_` and `-`, up to 64 characters.
    pub name: String,
    /// Names or ids of the registries it may use (at least one).
    pub registries: Vec<String>,
    /// Its role in each of them.
    pub role: Role,
    /// How long it is valid; `None`: until removed.
    pub expires_in: Option<Duration>,
}

/// A stored token (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// Its name.
    pub name: String,
    /// Its key, a member of its registries.
    pub key: PublicKey,
    /// Its role in each registry.
    pub role: Role,
    /// The registries it may use.
    pub registries: Vec<RegistryId>,
    /// When it was added (ms since the epoch).
    pub created_at: i64,
    /// When it stops working (ms since the epoch), if ever.
    pub expires_at: Option<i64>,
    /// When it was last used (ms since the epoch, to the minute), if ever.
    pub last_used_at: Option<i64>,
}

impl Token {
    /// Whether the token has expired at `now` (ms since the epoch).
    pub fn expired_at(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Whether the token may use registry `id`.
    pub fn covers(&self, id: &RegistryId) -> bool {
        self.registries.contains(id)
    }
}

/// A token just added, with its secret: shown once, never stored.
#[derive(Debug)]
pub struct TokenAdded {
    /// The token.
    pub token: Token,
    /// The bearer secret; give it to the program that will use the token.
    pub secret: String,
    /// The token's key file.
    pub key_file: PathBuf,
}

/// A token that authenticated a request.
#[derive(Debug)]
pub struct TokenSession {
    /// The token.
    pub token: Token,
    /// Its key, which signs what is written through it.
    pub identity: Identity,
}

/// A token operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The name cannot be used.
    #[error(
        "'{name}' is not a token name: use letters, digits, '.', '_' and '-' (1 to 64 characters, starting with a letter or digit)"
    )]
    BadName {
        /// The name given.
        name: String,
    },
    /// A token of that name exists.
    #[error("a token named '{name}' exists; remove it first or choose another name")]
    Exists {
        /// The name.
        name: String,
    },
    /// No token of that name.
    #[error("no token named '{name}' on this replica")]
    NotFound {
        /// The name.
        name: String,
    },
    /// A token must name at least one registry.
    #[error("a token needs at least one registry to use")]
    NoRegistries,
    /// The secret is not any token's.
    #[error("the token is not known here; check it, or ask for a new one")]
    Unknown,
    /// The token has expired.
    #[error("the token '{name}' has expired; ask for a new one")]
    Expired {
        /// The token's name.
        name: String,
    },
    /// A registry could not be found.
    #[error(transparent)]
    Registry(#[from] LookupError),
    /// Making the token's key a member failed (this replica must be an
    /// admin of each registry).
    #[error("making token '{name}' a member of registry {registry}: {source}")]
    Member {
        /// The token's name.
        name: String,
        /// The registry.
        registry: String,
        /// Why.
        #[source]
        source: Box<WriteError>,
    },
    /// The token's key file could not be made or read.
    #[error("token '{name}': its key file: {source}")]
    Key {
        /// The token's name.
        name: String,
        /// Why.
        #[source]
        source: IdentityError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    (1..=64).contains(&name.len())
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn new_secret() -> Result<String, IdentityError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| IdentityError::Random {
        reason: e.to_string(),
    })?;
    Ok(format!("{SECRET_PREFIX}{}", hex::encode(bytes)))
}

fn token_of(row: TokenRow, path: &str) -> Result<Token, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt {
        path: path.to_owned(),
        what,
    };
    Ok(Token {
        key: PublicKey::from_bytes(&row.key)
            .map_err(|_| corrupt(format!("token '{}' has a malformed key", row.name)))?,
        role: row
            .role
            .parse()
            .map_err(|_| corrupt(format!("token '{}' has an unknown role", row.name)))?,
        name: row.name,
        registries: row.registries,
        created_at: row.created_at,
        expires_at: row.expires_at,
        last_used_at: row.last_used_at,
    })
}

impl Replica {
    /// Where the key of token `name` lives: beside the store.
    pub fn token_key_path(&self, name: &str) -> PathBuf {
        self.path().with_extension(format!("token-{name}.key"))
    }

    /// Adds a token: makes its key, makes the key a member of each registry
    /// with the token's role (this replica must be an admin of each), and
    /// stores a hash of a new secret. The secret is returned once.
    pub fn add_token(&self, spec: &TokenSpec) -> Result<TokenAdded, TokenError> {
        let name = spec.name.as_str();
        if !valid_name(name) {
            return Err(TokenError::BadName { name: name.into() });
        }
        if spec.registries.is_empty() {
            return Err(TokenError::NoRegistries);
        }
        if self.with_store(|s| s.token(name))?.is_some() {
            return Err(TokenError::Exists { name: name.into() });
        }
        let registries = spec
            .registries
            .iter()
            .map(|r| self.registry(r))
            .collect::<Result<Vec<_>, _>>()?;
        let key_error = |source| TokenError::Key {
            name: name.into(),
            source,
        };
        let identity = Identity::generate().map_err(key_error)?;
        let secret = new_secret().map_err(key_error)?;
        let key = identity.public_key();
        let key_file = self.token_key_path(name);
        identity.save(&key_file).map_err(key_error)?;
        let mut joined: Vec<&crate::registry::Registry> = Vec::new();
        for registry in &registries {
            let added = registry
                .set_member(key, spec.role)
                .and_then(|()| registry.set_alias(key, Some(&format!("token {name}"))));
            if let Err(source) = added {
                // Leave nothing half made: the key leaves what it joined.
                for done in &joined {
                    let _ = done.remove_member(key);
                }
                let _ = std::fs::remove_file(&key_file);
                return Err(TokenError::Member {
                    name: name.into(),
                    registry: registry.name(),
                    source: Box::new(source),
                });
            }
            joined.push(registry);
        }
        let created_at = now_ms();
        let row = TokenRow {
            name: name.into(),
            key: key.as_bytes().to_vec(),
            role: spec.role.name().into(),
            registries: registries.iter().map(|r| r.id()).collect(),
            created_at,
            expires_at: spec.expires_in.map(|d| {
                created_at.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }),
            last_used_at: None,
        };
        let detail = serde_json::json!({
            "token": name,
            "key": key.to_string(),
            "role": spec.role.name(),
            "registries": registries.iter().map(|r| r.name()).collect::<Vec<_>>(),
            "expires_at": row.expires_at,
        });
        self.with_store(|s| s.save_token(&row, &secret_hash(&secret), &detail))?;
        let path = self.path().display().to_string();
        Ok(TokenAdded {
            token: token_of(row, &path)?,
            secret,
            key_file,
        })
    }

    /// Every token, by name.
    pub fn tokens(&self) -> Result<Vec<Token>, TokenError> {
        let path = self.path().display().to_string();
        let rows = self.with_store(|s| s.tokens())?;
        Ok(rows
            .into_iter()
            .map(|r| token_of(r, &path))
            .collect::<Result<_, _>>()?)
    }

    /// One token by name.
    pub fn token(&self, name: &str) -> Result<Token, TokenError> {
        let path = self.path().display().to_string();
        match self.with_store(|s| s.token(name))? {
            Some(row) => Ok(token_of(row, &path)?),
            None => Err(TokenError::NotFound { name: name.into() }),
        }
    }

    /// Removes a token: its key leaves every registry it was a member of
    /// (with the usual strong removal: what it wrote concurrently with the
    /// removal is revoked), and its row and key file go.
    pub fn remove_token(&self, name: &str) -> Result<Token, TokenError> {
        let token = self.token(name)?;
        for id in &token.registries {
            let Ok(registry) = self.registry_by_id(*id) else {
                continue;
            };
            if registry.members().iter().any(|m| m.key == token.key) {
                registry
                    .remove_member(token.key)
                    .map_err(|source| TokenError::Member {
                        name: name.into(),
                        registry: registry.name(),
                        source: Box::new(source),
                    })?;
            }
        }
        let detail = serde_json::json!({ "token": name, "key": token.key.to_string() });
        self.with_store(|s| s.remove_token(name, token.registries.first(), &detail))?;
        let _ = std::fs::remove_file(self.token_key_path(name));
        Ok(token)
    }

    /// The token whose secret this is, with its key, if it is known and has
    /// not expired. Records the use (to the minute).
    pub fn authenticate_token(&self, secret: &str) -> Result<TokenSession, TokenError> {
        let path = self.path().display().to_string();
        let row = self
            .with_store(|s| s.token_by_secret_hash(&secret_hash(secret.trim())))?
            .ok_or(TokenError::Unknown)?;
        let token = token_of(row, &path)?;
        let now = now_ms();
        if token.expired_at(now) {
            return Err(TokenError::Expired { name: token.name });
        }
        let identity = Identity::load(&self.token_key_path(&token.name)).map_err(|source| {
            TokenError::Key {
                name: token.name.clone(),
                source,
            }
        })?;
        if token
            .last_used_at
            .is_none_or(|at| now.saturating_sub(at) >= TOUCH_EVERY_MS)
        {
            self.with_store(|s| s.touch_token(&token.name, now))?;
        }
        Ok(TokenSession { token, identity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FieldDef, FieldKind, Schema};

    fn replica() -> (tempfile::TempDir, Replica) {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::open(dir.path().join("hub.db")).unwrap();
        replica
            .create_registry(
                "services",
                Schema::new().field(FieldDef::new("name", FieldKind::Text)),
            )
            .unwrap();
        (dir, replica)
    }

    fn spec(name: &str, expires_in: Option<Duration>) -> TokenSpec {
        TokenSpec {
            name: name.into(),
            registries: vec!["services".into()],
            role: Role::Writer,
            expires_in,
        }
    }

    #[test]
    fn a_token_authenticates_by_its_secret_and_writes_with_its_own_key() {
        let (_dir, replica) = replica();
        let added = replica.add_token(&spec("deploy-bot", None)).unwrap();
        assert!(added.secret.starts_with(SECRET_PREFIX));
        let services = replica.registry("services").unwrap();
        let member = services
            .members()
            .into_iter()
            .find(|m| m.key == added.token.key)
            .expect("the token's key is a member");
        assert_eq!(member.role, Role::Writer);
        assert_eq!(member.alias.as_deref(), Some("token deploy-bot"));

        let session = replica.authenticate_token(&added.secret).unwrap();
        assert_eq!(session.token.name, "deploy-bot");
        assert_eq!(session.identity.public_key(), added.token.key);
        assert!(replica.token("deploy-bot").unwrap().last_used_at.is_some());
        // The secret is not in the store.
        let store = std::fs::read(replica.path()).unwrap();
        let wal = std::fs::read(replica.path().with_extension("db-wal")).unwrap_or_default();
        let needle = added.secret.as_bytes();
        for bytes in [&store, &wal] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
    }

    #[test]
    fn unknown_expired_and_removed_tokens_are_refused() {
        let (_dir, replica) = replica();
        assert!(matches!(
            replica.authenticate_token("cst_nonsense"),
            Err(TokenError::Unknown)
        ));
        let expired = replica
            .add_token(&spec("old", Some(Duration::from_millis(0))))
            .unwrap();
        assert!(matches!(
            replica.authenticate_token(&expired.secret),
            Err(TokenError::Expired { name }) if name == "old"
        ));
        let added = replica.add_token(&spec("ci", None)).unwrap();
        let removed = replica.remove_token("ci").unwrap();
        assert_eq!(removed.key, added.token.key);
        assert!(matches!(
            replica.authenticate_token(&added.secret),
            Err(TokenError::Unknown)
        ));
        let services = replica.registry("services").unwrap();
        assert!(!services.members().iter().any(|m| m.key == added.token.key));
        assert!(!added.key_file.exists());
    }

    #[test]
    fn bad_names_duplicates_and_unknown_registries_are_refused_and_leave_nothing() {
        let (_dir, replica) = replica();
        for bad in ["", "../x", "-x", "a b", &"x".repeat(65)] {
            assert!(matches!(
                replica.add_token(&spec(bad, None)),
                Err(TokenError::BadName { .. })
            ));
        }
        replica.add_token(&spec("ci", None)).unwrap();
        assert!(matches!(
            replica.add_token(&spec("ci", None)),
            Err(TokenError::Exists { .. })
        ));
        let mut elsewhere = spec("other", None);
        elsewhere.registries.push("nope".into());
        assert!(matches!(
            replica.add_token(&elsewhere),
            Err(TokenError::Registry(_))
        ));
        assert_eq!(replica.tokens().unwrap().len(), 1);
        assert!(!replica.token_key_path("other").exists());
    }
}
