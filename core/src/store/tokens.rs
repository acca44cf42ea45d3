//! The API-token table: per token a hash of its bearer secret, its key, its
//! role and registries. What a token may do is the replica's business; the
//! store keeps the rows and journals tokens added and removed.

use rusqlite::{OptionalExtension, Row, params};

use super::{Result, Store, sql};
use crate::ids::RegistryId;

/// One stored token.
#[derive(Clone, Debug)]
pub(crate) struct TokenRow {
    pub(crate) name: String,
    pub(crate) key: Vec<u8>,
    pub(crate) role: String,
    pub(crate) registries: Vec<RegistryId>,
    pub(crate) created_at: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) last_used_at: Option<i64>,
}

const COLUMNS: &str = "name, key, role, registries, created_at, expires_at, last_used_at";

fn token_row(path: &str) -> impl Fn(&Row<'_>) -> rusqlite::Result<TokenRow> + '_ {
    move |r| {
        let registries: String = r.get(3)?;
        let ids: Vec<String> = serde_json::from_str(&registries).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
        })?;
        let registries = ids
            .iter()
            .map(|id| id.parse::<RegistryId>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    3,
                    rusqlite::types::Type::Text,
                    format!("{path}: {e}").into(),
                )
            })?;
        Ok(TokenRow {
            name: r.get(0)?,
            key: r.get(1)?,
            role: r.get(2)?,
            registries,
            created_at: r.get(4)?,
            expires_at: r.get(5)?,
            last_used_at: r.get(6)?,
        })
    }
}

impl Store {
    /// Every token, by name.
    pub(crate) fn tokens(&self) -> Result<Vec<TokenRow>> {
        let mut stmt = self
            .conn()
            .prepare(&format!("SELECT {COLUMNS} FROM api_tokens ORDER BY name"))
            .map_err(sql(self.path(), "list tokens"))?;
        stmt.query_map([], token_row(self.path()))
            .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(sql(self.path(), "list tokens"))
    }

    /// Token `name`, if there is one.
    pub(crate) fn token(&self, name: &str) -> Result<Option<TokenRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM api_tokens WHERE name = ?1"),
                [name],
                token_row(self.path()),
            )
            .optional()
            .map_err(sql(self.path(), "read token"))
    }

    /// The token whose secret hashes to `hash`, if any.
    pub(crate) fn token_by_secret_hash(&self, hash: &[u8]) -> Result<Option<TokenRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM api_tokens WHERE secret_hash = ?1"),
                [hash],
                token_row(self.path()),
            )
            .optional()
            .map_err(sql(self.path(), "look up token"))
    }

    /// Stores a new token and journals it (`token added`, with `detail`), in
    /// one transaction.
    pub(crate) fn save_token(
        &mut self,
        token: &TokenRow,
        secret_hash: &[u8],
        detail: &serde_json::Value,
    ) -> Result<()> {
        let ids: Vec<String> = token.registries.iter().map(ToString::to_string).collect();
        let tx = self.begin()?;
        tx.conn()
            .execute(
                "INSERT INTO api_tokens
                   (name, key, secret_hash, role, registries, created_at, expires_at, last_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
                params![
                    token.name,
                    token.key,
                    secret_hash,
                    token.role,
                    serde_json::to_string(&ids).expect("strings serialize"),
                    token.created_at,
                    token.expires_at,
                ],
            )
            .map_err(sql(tx.path(), "store token"))?;
        tx.journal(token.registries.first(), "token added", detail)?;
        tx.commit()
    }

    /// Records that token `name` was used at `at` (ms).
    pub(crate) fn touch_token(&self, name: &str, at: i64) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE api_tokens SET last_used_at = ?2 WHERE name = ?1",
                params![name, at],
            )
            .map_err(sql(self.path(), "record token use"))?;
        Ok(())
    }

    /// Removes token `name` and journals it (`token removed`, with `detail`),
    /// in one transaction.
    pub(crate) fn remove_token(
        &mut self,
        name: &str,
        registry: Option<&RegistryId>,
        detail: &serde_json::Value,
    ) -> Result<()> {
        let tx = self.begin()?;
        tx.conn()
            .execute("DELETE FROM api_tokens WHERE name = ?1", [name])
            .map_err(sql(tx.path(), "remove token"))?;
        tx.journal(registry, "token removed", detail)?;
        tx.commit()
    }
}
