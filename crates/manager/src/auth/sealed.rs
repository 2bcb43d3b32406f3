//! Secrets at rest: what a job needs to reach a registry or an origin (a registry password,
//! request headers such as `Authorization`) is sealed with AES-256-GCM before it is stored,
//! so a copy of the database (a backup, a replica, a stolen file) holds no usable credential.
//!
//! The key is 32 random bytes, hex-encoded, from `POLLEN_MANAGER_SECRETS_KEY`, else from
//! `secrets_key_file`, else from `DATA_DIR/secrets.key`, which is created (0600) on first
//! start. Several managers sharing one PostgreSQL database must share the key.
//!
//! Stored form: `v1:` then hex of a random 96-bit nonce and the ciphertext with its tag. A
//! value without the prefix was stored before sealing existed and is read as it is.

use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// The environment variable that carries the key, hex.
pub const KEY_ENV: &str = "POLLEN_MANAGER_SECRETS_KEY";

const PREFIX: &str = "v1:";

/// Why secrets cannot be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the secrets key in {0} is not 64 hex digits (32 bytes)")]
    BadKey(String),
    #[error("cannot read or create the secrets key file {path}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a stored secret cannot be opened: it is damaged or was sealed with another key")]
    Open,
    #[error("the system random number generator failed")]
    Random,
}

/// Seals and opens stored secrets with the manager's key.
pub struct SecretBox {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// The key from the environment, the given file, or `DATA_DIR/secrets.key` (made on
    /// first use).
    pub fn load(key_file: Option<&Path>, data_dir: &Path) -> Result<Self, SealError> {
        if let Ok(hex_key) = std::env::var(KEY_ENV) {
            return Self::from_hex(&hex_key, KEY_ENV);
        }
        let path = key_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.join("secrets.key"));
        let io = |source| SealError::KeyFile {
            path: path.clone(),
            source,
        };
        if key_file.is_none() && !path.exists() {
            let mut key = [0u8; 32];
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| SealError::Random)?;
            write_private(&path, &hex::encode(key)).map_err(io)?;
        }
        let text = std::fs::read_to_string(&path).map_err(io)?;
        Self::from_hex(text.trim(), &path.display().to_string())
    }

    fn from_hex(hex_key: &str, origin: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| SealError::BadKey(origin.into()))?;
        let unbound =
            UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealError::BadKey(origin.into()))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// `plain`, sealed for storage.
    pub fn seal(&self, plain: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .map_err(|_| SealError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}", hex::encode(out)))
    }

    /// What [`SecretBox::seal`] sealed; a value stored before sealing existed, as it is.
    pub fn open(&self, stored: &str) -> Result<String, SealError> {
        let Some(hex_text) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let raw = hex::decode(hex_text).map_err(|_| SealError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut data = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut data)
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Open)
    }
}

/// Writes `text` to a new file only its owner may read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_text_opens_with_its_key_only_and_hides_the_plain_text() {
        let dir = tempfile::tempdir().unwrap();
        let b = SecretBox::load(None, dir.path()).unwrap();
        let sealed = b.seal("Authorization: Bearer s3cr3t").unwrap();
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("s3cr3t"));
        assert_ne!(
            sealed,
            b.seal("Authorization: Bearer s3cr3t").unwrap(),
            "fresh nonce"
        );
        assert_eq!(b.open(&sealed).unwrap(), "Authorization: Bearer s3cr3t");
        // The key file was made 0600 and is reused.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secrets.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = SecretBox::load(None, dir.path()).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "Authorization: Bearer s3cr3t");
        // Another key, or a flipped byte, does not open it.
        let other = SecretBox::load(None, tempfile::tempdir().unwrap().path()).unwrap();
        assert!(other.open(&sealed).is_err());
        let mut bad = sealed.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        assert!(b.open(&bad).is_err());
        // A value from before sealing is read as it is.
        assert_eq!(b.open("legacy-password").unwrap(), "legacy-password");
    }

    #[test]
    fn a_bad_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "not hex").unwrap();
        assert!(matches!(
            SecretBox::load(Some(&f), dir.path()),
            Err(SealError::BadKey(_))
        ));
        let e = SecretBox::load(Some(&dir.path().join("missing")), dir.path())
            .expect_err("a missing key file");
        assert!(matches!(e, SealError::KeyFile { .. }), "{e:?}");
        let io = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .expect("the io error as the source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }
}
