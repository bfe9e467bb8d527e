//! TLS configuration: rustls client configs for originating TLS to upstreams (webpki roots
//! plus per-route CA bundles; ALPN h2 and http/1.1). The interception CA comes later.
//! No sockets here.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Building a TLS configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA bundle could not be read or holds no certificate.
    #[error("CA bundle {path}: {detail}")]
    Bundle {
        /// Path.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider Sima uses everywhere (one backend, `ring`).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting the webpki roots plus `extra_ca` (PEM), offering h2 and http/1.1.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let shown = path.display().to_string();
        let iter = CertificateDer::pem_file_iter(path).map_err(|e| TlsError::Bundle {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        let mut added = 0;
        for cert in iter {
            let cert = cert.map_err(|e| TlsError::Bundle {
                path: shown.clone(),
                detail: e.to_string(),
            })?;
            roots.add(cert).map_err(|e| TlsError::Bundle {
                path: shown.clone(),
                detail: e.to_string(),
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(TlsError::Bundle {
                path: shown,
                detail: "no PEM certificate found".into(),
            });
        }
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
