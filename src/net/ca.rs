//! `ca_file`: extra trust anchors, read and checked when the config is built.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

/// A CA bundle larger than this is not a CA bundle (the system's whole store is ~250 KiB).
const MAX_CA_BYTES: u64 = 4 * 1024 * 1024;

/// Trust anchors read from a `ca_file`, parsed and checked when the config is built.
pub struct CaBundle {
    pub path: PathBuf,
    certs: Vec<CertificateDer<'static>>,
    pub(super) digest: [u8; 32],
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CaBundle({}, {} certificate(s))",
            self.path.display(),
            self.certs.len()
        )
    }
}

impl PartialEq for CaBundle {
    // Same path and same content: a reload after the file changed builds a new client.
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.digest == other.digest
    }
}

impl CaBundle {
    pub fn load(path: &Path) -> Result<CaBundle, String> {
        use crate::fsread::{self, ReadError};
        // Through fsread: a FIFO or /dev/zero given as ca_file is an error, not a hang.
        let pem = match fsread::read(path, MAX_CA_BYTES) {
            Ok(pem) => pem,
            Err(ReadError::TooLarge(_)) => {
                return Err(format!(
                    "ca_file `{}` is larger than {} MiB; it should hold a few PEM certificates",
                    path.display(),
                    MAX_CA_BYTES / 1024 / 1024
                ));
            }
            Err(e @ ReadError::Io(_)) => {
                return Err(format!("cannot read ca_file `{}`: {e}", path.display()));
            }
            Err(e) => return Err(format!("ca_file `{}` {e}", path.display())),
        };
        CaBundle::from_pem(path, &pem)
    }

    /// Every `CERTIFICATE` block must decode and be usable as a trust anchor; other blocks
    /// (a private key pasted by mistake) are ignored, but at least one certificate is needed.
    pub fn from_pem(path: &Path, pem: &[u8]) -> Result<CaBundle, String> {
        let name = path.display();
        let mut certs = Vec::new();
        for (i, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
            let cert = cert.map_err(|e| {
                format!(
                    "ca_file `{name}` is not a PEM bundle: certificate {} does not decode ({e})",
                    i + 1
                )
            })?;
            rustls::RootCertStore::empty()
                .add(cert.clone())
                .map_err(|e| {
                    format!(
                        "ca_file `{name}`: certificate {} is not a usable CA certificate ({e})",
                        i + 1
                    )
                })?;
            certs.push(cert);
        }
        if certs.is_empty() {
            return Err(format!(
                "ca_file `{name}` holds no PEM certificate (no `-----BEGIN CERTIFICATE-----` block); give the CA or intermediate certificates in PEM form"
            ));
        }
        let mut h = Sha256::new();
        for c in &certs {
            h.update((c.len() as u64).to_be_bytes());
            h.update(c.as_ref());
        }
        Ok(CaBundle {
            path: path.to_owned(),
            certs,
            digest: h.finalize().into(),
        })
    }

    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }
}
