//! TLS for the gateway (rustls): a certificate chain and key from PEM files,
//! reloadable in place (the roles reload on SIGHUP), so certificates rotate without
//! dropping connections. Connections keep the configuration they started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Why a certificate or key could not be used. The operator's fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The gateway's TLS configuration, swappable at run time.
pub struct ReloadableTls {
    cert: PathBuf,
    key: PathBuf,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableTls").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl ReloadableTls {
    /// Loads the certificate chain at `cert` and private key at `key` (PEM).
    ///
    /// Errors: [`TlsError`] naming the file or the mismatch.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::load_with_alpn(cert, key, &[b"http/1.1"])
    }

    /// As [`load`](Self::load), offering the ALPN protocol ids `alpn` (the gateway
    /// offers `http/1.1`; the TURN relay `stun.turn`, RFC 7443). A client that
    /// offers no ALPN is served either way.
    pub fn load_with_alpn(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = server_config(cert, key, &alpn)?;
        Ok(Self { cert: cert.to_owned(), key: key.to_owned(), alpn, current: RwLock::new(Arc::new(config)) })
    }

    /// Re-reads both files. On error the previous configuration stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.cert, &self.key, &self.alpn)?);
        // A poisoned lock still holds a valid Arc; overwrite it.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner())))
    }
}

fn pem_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Pem { path: path.to_owned(), reason: reason.to_string() }
}

fn server_config(cert: &Path, key: &Path, alpn: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(cert, e))?;
    if chain.is_empty() {
        return Err(pem_error(cert, "no CERTIFICATE block"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}
