//! Ids shared by every layer: a registry's id.

use std::fmt;
use std::str::FromStr;

use automerge::ChangeHash;

/// A registry's id: the first 16 bytes of the hash of its genesis change.
///
/// Because the id is derived from the signed genesis, no one can make a
/// second, different genesis for the same registry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryId([u8; 16]);

impl RegistryId {
    pub(crate) fn from_genesis(hash: &ChangeHash) -> Self {
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash.0[..16]);
        RegistryId(id)
    }

    /// Whether `hash` is the genesis of this registry.
    pub(crate) fn is_genesis(&self, hash: &ChangeHash) -> bool {
        hash.0[..16] == self.0
    }

    /// The 16 id bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Builds an id from 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(RegistryId(bytes.try_into().ok()?))
    }
}

impl fmt::Display for RegistryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for RegistryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistryId({self})")
    }
}

impl FromStr for RegistryId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hex::decode(s)
            .ok()
            .and_then(|b| RegistryId::from_bytes(&b))
            .ok_or_else(|| format!("'{s}' is not a registry id (32 hex digits)"))
    }
}
