//! PEM files named by a setting (CAs, client certificates and keys, for PostgreSQL and Kafka):
//! read and parsed into rustls's types, every error one line naming the setting and the file,
//! never a key's contents.

use std::path::Path;

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    RootCertStore,
};

/// The file's contents; an error names the setting and the file.
fn read(path: &Path, setting: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{setting}: cannot read {}: {e}", path.display()))
}

/// Every certificate of the PEM file (at least one).
pub fn certificates(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, setting)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{setting}: {} is not valid PEM: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{setting}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certificates)
}

/// The PEM file's certificates as the roots to trust.
pub fn roots(path: &Path, setting: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path, setting)? {
        roots.add(certificate).map_err(|e| {
            format!(
                "{setting}: {} holds a certificate that cannot be a trusted root: {e}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

/// The private key of the PEM file (PKCS#8, PKCS#1 or SEC1, unencrypted).
pub fn private_key(path: &Path, setting: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path, setting)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{setting}: {} holds no PEM private key (unencrypted PKCS#8, PKCS#1 or SEC1; \
             encrypted keys are not supported)",
            path.display()
        ),
        // The parser's message may quote the file; a key's file is never quoted.
        _ => format!(
            "{setting}: {} is not a valid PEM private key file",
            path.display()
        ),
    })
}
