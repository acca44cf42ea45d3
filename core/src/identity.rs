//! Replica identities: ed25519 key pairs, their public form, and key files.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// First line of a key file; identifies the format and its version.
const KEY_FILE_HEADER: &str = "chittysync-identity-v1";

/// The public half of an identity: what other replicas know a replica by.
///
/// Its text form is 64 lowercase hex digits, stable across versions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The raw 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Builds a public key from its 32 raw bytes, checking it is a valid
    /// ed25519 point.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| IdentityError::BadPublicKey {
            reason: format!("expected 32 bytes, got {}", bytes.len()),
        })?;
        VerifyingKey::from_bytes(&arr).map_err(|_| IdentityError::BadPublicKey {
            reason: "not a valid ed25519 public key".into(),
        })?;
        Ok(PublicKey(arr))
    }

    /// A short form for humans (first 8 hex digits). Never use it to decide trust.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub(crate) fn verifying_key(&self) -> VerifyingKey {
        // Construction checked validity, so this cannot fail.
        VerifyingKey::from_bytes(&self.0).expect("public key validated at construction")
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s.trim()).map_err(|_| IdentityError::BadPublicKey {
            reason: format!("'{s}' is not 64 hex digits"),
        })?;
        PublicKey::from_bytes(&bytes)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A replica's ed25519 key pair.
///
/// `Debug` shows only the public key; the secret never leaves this type
/// except through [`Identity::save`].
pub struct Identity {
    signing: SigningKey,
}

impl Identity {
    /// Creates a fresh key pair from the operating system's random source.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| IdentityError::Random {
            reason: e.to_string(),
        })?;
        Ok(Identity {
            signing: SigningKey::from_bytes(&secret),
        })
    }

    /// Builds an identity from a 32-byte secret seed (for tests and key import).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Identity {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// The public key other replicas know this identity by.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }

    /// Reads a key file written by [`Identity::save`].
    ///
    /// Refuses files that other users may read, like ssh does.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let file_err = |reason: String| IdentityError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path)
                .map_err(|e| file_err(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(file_err(format!(
                    "permissions {:o} let other users read the secret key; run `chmod 600` on it",
                    mode & 0o777
                )));
            }
        }
        let text = fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let mut lines = text.lines();
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(file_err(format!(
                "not a ChittySync key file (first line is not '{KEY_FILE_HEADER}')"
            )));
        }
        let secret = lines
            .next()
            .and_then(|l| hex::decode(l.trim()).ok())
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| file_err("second line is not a 64-hex-digit secret key".into()))?;
        Ok(Identity::from_secret_bytes(secret))
    }

    /// Writes the key pair to a new file with mode 0600. Never overwrites.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let file_err = |reason: String| IdentityError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| file_err(e.to_string()))?;
        let body = format!(
            "{KEY_FILE_HEADER}\n{}\n# public key: {}\n",
            hex::encode(self.signing.to_bytes()),
            self.public_key()
        );
        file.write_all(body.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| file_err(e.to_string()))
    }

    /// Loads the key file at `path`, creating a new identity there if absent.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        if path.exists() {
            Identity::load(path)
        } else {
            let identity = Identity::generate()?;
            identity.save(path)?;
            Ok(identity)
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "identity {}", self.public_key())
    }
}

/// Problems with keys and key files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The key file could not be read, written or parsed.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// Where the key file is.
        path: PathBuf,
        /// What went wrong (never contains key material).
        reason: String,
    },
    /// A public key in text or bytes is malformed.
    #[error("invalid public key: {reason}")]
    BadPublicKey {
        /// What is wrong with it.
        reason: String,
    },
    /// The operating system's random source failed.
    #[error("could not get random bytes for a new key: {reason}")]
    Random {
        /// The system's error.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let id = Identity::from_secret_bytes([7u8; 32]);
        let secret_hex = hex::encode([7u8; 32]);
        for text in [format!("{id:?}"), format!("{id}")] {
            assert!(!text.contains(&secret_hex), "{text}");
            assert!(text.contains(&id.public_key().to_string()));
        }
    }

    #[test]
    fn public_key_text_round_trips() {
        let pk = Identity::generate().unwrap().public_key();
        let text = pk.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<PublicKey>().unwrap(), pk);
        assert!("zz".parse::<PublicKey>().is_err());
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        let id = Identity::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Identity::load(&path).unwrap().public_key(), id.public_key());
        assert!(id.save(&path).is_err(), "save must never overwrite a key");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
