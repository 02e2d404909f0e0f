//! The fake's TLS: a throw-away CA, a server certificate and a client certificate.

use super::*;

/// A CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI), and
/// the fake's rustls config: client certificates from the CA authenticate, none is needed.
pub(super) fn make_tls(dir: &Path) -> (TlsFiles, rustls::ServerConfig) {
    // The same test PKI as the etcd cluster's (a CA, a server and a client certificate).
    let files = crate::support::etcd::make_certs(dir);
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.server_cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&files.server_key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.ca).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    (
        TlsFiles {
            ca: files.ca,
            client_cert: files.client_cert,
            client_key: files.client_key,
        },
        config,
    )
}
