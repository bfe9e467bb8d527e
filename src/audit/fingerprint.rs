//! Keyed fingerprints of detected values, and the key file they are made with.

use super::*;

/// Keyed fingerprints of detected values: `HMAC-SHA256(key, class || 0x00 || value)`, first 8
/// bytes as 16 hex characters. The same value gives the same fingerprint under the same key, so
/// records can be correlated without storing the value.
#[derive(Clone)]
pub struct Fingerprinter {
    pub(super) mac: Hmac<Sha256>,
}

impl fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprinter { key: <redacted> }")
    }
}

impl Fingerprinter {
    /// Loads the 32-byte key at `path`, or creates it (random, mode 0600, `create_new`) when
    /// it does not exist. The file holds the key as 64 hex characters; an operator-provided
    /// file may also hold 32 raw bytes. A key file accessible by group or others is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(path) {
            Ok(file) => Self::create(path, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io_error("create key file", path, &e)),
        }
    }

    pub(super) fn create(path: &Path, mut file: File) -> Result<Self, AuditError> {
        let mut key = [0u8; 32];
        let written = getrandom::fill(&mut key)
            .map_err(|e| AuditError::Random {
                detail: e.to_string(),
            })
            .and_then(|()| {
                set_owner_only(&file, path)?;
                let text = format!("{}\n", hex::encode(key));
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io_error("write key file", path, &e))
            });
        if let Err(e) = written {
            drop(file);
            let _ = fs::remove_file(path);
            return Err(e);
        }
        if let Some(parent) = path.parent() {
            let _ = sync_dir(parent);
        }
        Self::from_key(&key)
    }

    pub(super) fn load(path: &Path) -> Result<Self, AuditError> {
        let meta = fs::metadata(path).map_err(|e| io_error("read key file", path, &e))?;
        if !meta.is_file() {
            return Err(AuditError::KeyInvalid {
                path: path.to_path_buf(),
                detail: "not a regular file".to_string(),
            });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(AuditError::KeyPermissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        let bytes = fs::read(path).map_err(|e| io_error("read key file", path, &e))?;
        let invalid = |detail: String| AuditError::KeyInvalid {
            path: path.to_path_buf(),
            detail,
        };
        let key = if bytes.len() == 32 {
            bytes
        } else {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| invalid(format!("{} bytes that are not hex text", bytes.len())))?;
            let key = hex::decode(text.trim()).map_err(|e| invalid(format!("not hex: {e}")))?;
            if key.len() != 32 {
                return Err(invalid(format!("{} bytes of key", key.len())));
            }
            key
        };
        Self::from_key(&key).map_err(|_| invalid("unusable key".to_string()))
    }

    /// Builds a fingerprinter from key bytes (at least 32 bytes).
    pub fn from_key(key: &[u8]) -> Result<Self, AuditError> {
        let invalid = |detail: &str| AuditError::KeyInvalid {
            path: PathBuf::from("<memory>"),
            detail: detail.to_string(),
        };
        if key.len() < 32 {
            return Err(invalid("shorter than 32 bytes"));
        }
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| invalid("rejected"))?;
        Ok(Self { mac })
    }

    /// Fingerprint of `value` found as data class `class`: 16 lower-case hex characters.
    pub fn fingerprint(&self, class: &str, value: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(class.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        let out = mac.finalize().into_bytes();
        hex::encode(out.get(..8).unwrap_or_default())
    }
}

#[cfg(unix)]
pub(super) fn set_owner_only(file: &File, path: &Path) -> Result<(), AuditError> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| io_error("chmod key file", path, &e))
}

#[cfg(not(unix))]
pub(super) fn set_owner_only(_file: &File, _path: &Path) -> Result<(), AuditError> {
    Ok(())
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
