//! Offline exchange: bundles of signed changes, carried as files.
//!
//! A bundle holds the signed changes of one registry. Its binary form:
//!
//! ```text
//! "CHITTYSYNC-BUNDLE" | version: u8 = 1 | registry id: 16 bytes | count: u32 BE
//! count × ( author key: 32 | signature: 64 | length: u32 BE | change bytes )
//! ```
//!
//! Decoding checks every length against the input, so damaged or hostile
//! bytes give an error, never a panic or a huge allocation.

use std::path::Path;

use automerge::Change;

use crate::error::{ExportError, ImportError};
use crate::identity::PublicKey;
use crate::ids::RegistryId;
use crate::trust::SignedChange;
use crate::trust::attest::Attestation;

const MAGIC: &[u8] = b"CHITTYSYNC-BUNDLE";
/// Version 1: changes only. Version 2: changes, then attestations.
const VERSION: u8 = 1;
const VERSION_WITH_ATTESTATIONS: u8 = 2;
/// Largest single change accepted (bytes).
const MAX_CHANGE_LEN: usize = 256 << 20;

/// Signed changes of one registry, ready to travel.
#[derive(Clone, Debug)]
pub struct Bundle {
    registry: RegistryId,
    changes: Vec<SignedChange>,
    attestations: Vec<Attestation>,
}

/// What an import did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// The registry.
    pub registry: RegistryId,
    /// Its name.
    pub name: String,
    /// Changes verified and applied.
    pub applied: usize,
    /// Changes skipped because this replica had them.
    pub already_known: usize,
    /// Whether the registry was new to this replica.
    pub created: bool,
}

impl Bundle {
    pub(crate) fn new(
        registry: RegistryId,
        changes: Vec<SignedChange>,
        attestations: Vec<Attestation>,
    ) -> Self {
        Bundle {
            registry,
            changes,
            attestations,
        }
    }

    /// Members' attestations of states of the registry, carried along.
    pub fn attestations(&self) -> &[Attestation] {
        &self.attestations
    }

    /// The registry the changes belong to.
    pub fn registry(&self) -> RegistryId {
        self.registry
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether the bundle holds no change.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The signed changes.
    pub fn changes(&self) -> &[SignedChange] {
        &self.changes
    }

    pub(crate) fn into_parts(self) -> (Vec<SignedChange>, Vec<Attestation>) {
        (self.changes, self.attestations)
    }

    /// Encodes the bundle.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.changes.len() * 200);
        out.extend_from_slice(MAGIC);
        // Written as version 1 when there is nothing to attest, so readers of
        // version 1 keep reading what they can.
        out.push(if self.attestations.is_empty() {
            VERSION
        } else {
            VERSION_WITH_ATTESTATIONS
        });
        out.extend_from_slice(self.registry.as_bytes());
        out.extend_from_slice(&(self.changes.len() as u32).to_be_bytes());
        for c in &self.changes {
            let mut change = c.change.clone();
            let bytes = change.bytes();
            out.extend_from_slice(c.author.as_bytes());
            out.extend_from_slice(&c.signature);
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        if !self.attestations.is_empty() {
            out.extend_from_slice(&(self.attestations.len() as u32).to_be_bytes());
            for a in &self.attestations {
                out.extend_from_slice(a.member.as_bytes());
                out.extend_from_slice(&a.signature);
                out.extend_from_slice(&a.change_count.to_be_bytes());
                out.extend_from_slice(&a.digest);
                out.extend_from_slice(&(a.heads.len() as u32).to_be_bytes());
                out.extend_from_slice(&a.heads_bytes());
            }
        }
        out
    }

    /// Decodes a bundle. Signatures are *not* checked here; importing does.
    pub fn from_bytes(bytes: &[u8]) -> Result<Bundle, ImportError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(malformed("not a ChittySync bundle (bad magic)"));
        }
        let version = r.take(1)?[0];
        if version != VERSION && version != VERSION_WITH_ATTESTATIONS {
            return Err(malformed(&format!(
                "bundle version {version} is not supported (this build reads 1 and 2); upgrade ChittySync"
            )));
        }
        let registry = RegistryId::from_bytes(r.take(16)?).expect("16 bytes");
        let count = r.u32()? as usize;
        // Each entry takes at least 100 bytes: bound the count by the input.
        if count > r.remaining() / 100 {
            return Err(malformed("change count exceeds the bundle's size"));
        }
        let mut changes = Vec::with_capacity(count);
        for i in 0..count {
            let author = PublicKey::from_bytes(r.take(32)?)
                .map_err(|e| malformed(&format!("change {i}: {e}")))?;
            let signature: [u8; 64] = r.take(64)?.try_into().expect("64 bytes");
            let len = r.u32()? as usize;
            if len > MAX_CHANGE_LEN {
                return Err(malformed(&format!(
                    "change {i} is larger than {MAX_CHANGE_LEN} bytes"
                )));
            }
            let raw = r.take(len)?;
            let change = Change::try_from(raw)
                .map_err(|e| malformed(&format!("change {i} does not decode: {e}")))?;
            // Automerge does not check a change's checksum (the first bytes
            // of its hash, after the 4-byte magic) when decoding: without
            // this, a damaged change would be stored and passed on as is.
            if raw.get(4..8) != Some(&change.hash().0[..4]) {
                return Err(malformed(&format!("change {i} fails its checksum")));
            }
            changes.push(SignedChange::new(change, author, signature));
        }
        let mut attestations = Vec::new();
        if version == VERSION_WITH_ATTESTATIONS {
            let count = r.u32()? as usize;
            // Each attestation takes at least 140 bytes.
            if count > r.remaining() / 140 {
                return Err(malformed("attestation count exceeds the bundle's size"));
            }
            for i in 0..count {
                let member = PublicKey::from_bytes(r.take(32)?)
                    .map_err(|e| malformed(&format!("attestation {i}: {e}")))?;
                let signature: [u8; 64] = r.take(64)?.try_into().expect("64 bytes");
                let change_count = u64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes"));
                let digest: [u8; 32] = r.take(32)?.try_into().expect("32 bytes");
                let n = r.u32()? as usize;
                if n > r.remaining() / 32 {
                    return Err(malformed(&format!(
                        "attestation {i}: head count exceeds the bundle's size"
                    )));
                }
                let heads = Attestation::heads_from_bytes(r.take(32 * n)?).expect("multiple of 32");
                attestations.push(Attestation {
                    registry,
                    member,
                    heads,
                    digest,
                    change_count,
                    signature,
                });
            }
        }
        if r.remaining() != 0 {
            return Err(malformed("trailing bytes after the last change"));
        }
        Ok(Bundle {
            registry,
            changes,
            attestations,
        })
    }

    /// Writes the bundle to a file (atomically: a reader never sees half).
    pub fn write_file(&self, path: &Path) -> Result<(), ExportError> {
        let err = |e: std::io::Error| ExportError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, self.to_bytes()).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Reads a bundle file.
    pub fn read_file(path: &Path) -> Result<Bundle, ImportError> {
        let bytes = std::fs::read(path).map_err(|e| ImportError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Bundle::from_bytes(&bytes)
    }
}

fn malformed(reason: &str) -> ImportError {
    ImportError::Malformed {
        reason: reason.to_owned(),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ImportError> {
        if n > self.remaining() {
            return Err(malformed("truncated"));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, ImportError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_without_panicking() {
        for bytes in [
            &b""[..],
            b"CHITTYSYNC-BUNDLE",
            b"CHITTYSYNC-BUNDLE\x02",
            b"not a bundle at all, clearly",
            b"CHITTYSYNC-BUNDLE\x01aaaaaaaaaaaaaaaa\xff\xff\xff\xff",
        ] {
            assert!(matches!(
                Bundle::from_bytes(bytes),
                Err(ImportError::Malformed { .. })
            ));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Bundle::from_bytes(&bytes);
            let mut framed = MAGIC.to_vec();
            framed.push(VERSION);
            framed.extend_from_slice(&bytes);
            let _ = Bundle::from_bytes(&framed);
        }
    }

    #[test]
    fn empty_bundle_round_trips() {
        let b = Bundle::new(RegistryId::from_bytes(&[3; 16]).unwrap(), vec![], vec![]);
        let back = Bundle::from_bytes(&b.to_bytes()).unwrap();
        assert_eq!(back.registry(), b.registry());
        assert!(back.is_empty());
    }
}
