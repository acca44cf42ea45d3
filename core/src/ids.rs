//! Ids shared by every layer: a registry's id, and the forms a record id
//! may take.

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

/// The longest record id, in bytes.
pub(crate) const MAX_RECORD_ID: usize = 128;

/// What a record id given by a caller is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordIdForm {
    /// A UUID (`8-4-4-4-12` hex digits): the form of the ids the registry
    /// makes itself. One that names no record is a mistake, never a new
    /// record.
    Uuid,
    /// A name chosen by whoever created the record (or brought from a
    /// mirror's target): 1–128 ASCII letters, digits and `.` `_` `-` `:`
    /// `@`, starting with a letter or digit, without `..`.
    Name,
}

/// The form of a record id, or `None` for an id the registry could never
/// have made (a path, spaces, quotes, control characters, too long).
pub(crate) fn record_id_form(id: &str) -> Option<RecordIdForm> {
    if is_uuid(id) {
        return Some(RecordIdForm::Uuid);
    }
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok = first_ok
        && id.len() <= MAX_RECORD_ID
        && !id.contains("..")
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@'));
    ok.then_some(RecordIdForm::Name)
}

fn is_uuid(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_uuids_or_plain_names() {
        use RecordIdForm::{Name, Uuid};
        for (id, form) in [
            ("0192f8a4-5c3e-7b1a-9d2e-3f4a5b6c7d8e", Some(Uuid)),
            ("0192F8A4-5C3E-7B1A-9D2E-3F4A5B6C7D8E", Some(Uuid)),
            ("billing", Some(Name)),
            ("r1", Some(Name)),
            ("A", Some(Name)),
            ("7", Some(Name)),
            ("row-7.v2_x:y@z", Some(Name)),
            ("r-0123456789abcdef0123456789abcdef", Some(Name)),
            ("", None),
            ("../../etc", None),
            ("a/b", None),
            ("a..b", None),
            ("a\\b", None),
            (".hidden", None),
            ("_deleted", None),
            ("-flag", None),
            ("two words", None),
            ("a'b", None),
            ("tab\t", None),
            ("caf\u{e9}", None),
        ] {
            assert_eq!(record_id_form(id), form, "{id:?}");
        }
        assert_eq!(record_id_form(&"a".repeat(128)), Some(Name));
        assert_eq!(record_id_form(&"a".repeat(129)), None);
    }
}
