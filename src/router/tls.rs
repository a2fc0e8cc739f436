//! TLS for the router's engine connection (`https://` / `wss://`): rustls, no OpenSSL.
//!
//! Trust is the system's store (rustls-native-certs: Debian's /etc/ssl/certs, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`) plus an optional CA file of the user's ([`CA_FILE_ENV`], the add-on preference):
//! a hosted engine has a public certificate, a self-hosted one often a private CA. Hostnames are
//! verified (rustls' default). The crypto provider is ring: it builds with a C compiler alone,
//! where aws-lc-rs needs cmake and several more minutes per clean build.

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Read when no `ca_file` is given: a PEM file of CA certificates to trust besides the system's.
pub const CA_FILE_ENV: &str = "BLENDWIRE_CA_FILE";

/// What is wrong with a CA file; the text reads after its label ("ca_file ...").
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot be read ({path}: {source}); give the PEM file of the CA that signed the engine's certificate")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("is not PEM ({path}: {why}); give the CA certificate as PEM (-----BEGIN CERTIFICATE-----)")]
    BadPem { path: PathBuf, why: String },
    #[error("has no certificate ({path}): expected PEM blocks -----BEGIN CERTIFICATE----- (a key or a DER file does not do)")]
    NoCertificate { path: PathBuf },
    #[error("has a certificate that cannot be trusted as a CA ({path}, certificate {index}): {why}")]
    NotUsable { path: PathBuf, index: usize, why: String },
}

/// The certificates of the PEM file `path`, each checked to be usable as a trust anchor.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let owned = || path.to_path_buf();
    let bytes = std::fs::read(path).map_err(|source| CaFileError::Unreadable { path: owned(), source })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| CaFileError::BadPem {
            path: owned(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CaFileError::NoCertificate { path: owned() });
    }
    let mut probe = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        probe.add(cert.clone()).map_err(|e| CaFileError::NotUsable {
            path: owned(),
            index: i + 1,
            why: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// The client config of one router: the system's roots plus `ca_file`'s, the ring provider.
/// Built once when the router starts (loading the system store reads hundreds of files).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, CaFileError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        log::warn!("TLS: could not read part of the system trust store: {e}");
    }
    let (system, _) = roots.add_parsable_certificates(native.certs);
    let extra = match ca_file {
        Some(path) => {
            let certs = load_ca_file(path)?;
            let n = certs.len();
            roots.add_parsable_certificates(certs);
            n
        }
        None => 0,
    };
    if roots.is_empty() {
        log::warn!(
            "TLS: no trusted CA at all (the system store is empty: install ca-certificates; and no \
             {CA_FILE_ENV}): every https engine will be refused"
        );
    }
    log::debug!("TLS: trusting {system} system CA certificates and {extra} from the CA file");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // The ring provider supports the default versions; this cannot fail with it.
        .unwrap_or_else(|e| unreachable!("ring lacks TLS 1.2/1.3: {e}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A failed TLS handshake with `host`, said so that the user knows what to change.
pub fn describe(err: &rustls::Error, host: &str) -> String {
    let fix_ca = format!(
        "if the engine's certificate comes from a private CA, set {CA_FILE_ENV} (or the add-on's CA file \
         preference) to that CA's PEM file"
    );
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => format!(
                "the certificate the engine presented for {host:?} is signed by an issuer this router does not \
                 trust; {fix_ca}"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "the engine's certificate is not valid for the name {host:?} the URL uses ({cert}); use a name \
                 the certificate lists in the engine URL, or give the engine a certificate for {host:?}"
            ),
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => format!(
                "the engine's certificate for {host:?} is outside its validity period ({cert}); renew it (or \
                 check this machine's clock)"
            ),
            other => format!("the engine's certificate for {host:?} was refused: {other}; {fix_ca}"),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("the engine at {host:?} did not answer in TLS ({err}); use http:// if it does not serve https")
        }
        other => format!("TLS handshake with {host:?} failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, contents: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("blendwire-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// A self-signed CA (P-256, made once with openssl, valid for 100 years).
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBnzCCAUWgAwIBAgIUSHc6iLwl7Lj4FT/he7pdla4zVqowCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRYmxlbmR3aXJlLXVuaXQtY2EwIBcNMjYxMTMwMTUwNjQ4WhgP
MjEyNjExMDYxNTA2NDhaMBwxGjAYBgNVBAMMEWJsZW5kd2lyZS11bml0LWNhMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEwDGwDX7bOr9/FM4YzRl6yG+0+zEGO6NS
MEqnq3sW2QsOvmpmSQL7Vee0K8ScNbSRT/ug+z78RSaY+yTkyzPq6KNjMGEwHQYD
VR0OBBYEFAmawlDH5/GHP0vP0OFxhSaQGmpWMB8GA1UdIwQYMBaAFAmawlDH5/GH
P0vP0OFxhSaQGmpWMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEGMAoG
CCqGSM49BAMCA0gAMEUCIQCAWUZIQbfaQl5MJBdpXVWj4q4tEWLipdXfT16+CPQT
ywIgGmSmdLemgwXLKrbNJXiprsLy2QwLB1nkq53lTX/BkUU=
-----END CERTIFICATE-----
";

    #[test]
    fn ca_file_errors_say_what_is_wrong() {
        let missing = load_ca_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(matches!(missing, CaFileError::Unreadable { .. }), "{missing}");
        assert!(
            missing.to_string().starts_with("cannot be read (/nonexistent/ca.pem:"),
            "{missing}"
        );

        let key_only = temp(
            "key.pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let e = load_ca_file(&key_only).unwrap_err();
        assert!(matches!(e, CaFileError::NoCertificate { .. }), "{e}");
        assert!(e.to_string().contains("BEGIN CERTIFICATE"), "{e}");

        let text = temp("notes.txt", b"just some text\n");
        assert!(matches!(
            load_ca_file(&text).unwrap_err(),
            CaFileError::NoCertificate { .. }
        ));

        let cut = temp("cut.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n");
        assert!(matches!(load_ca_file(&cut).unwrap_err(), CaFileError::BadPem { .. }));

        let garbage = temp(
            "garbage.pem",
            b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        let e = load_ca_file(&garbage).unwrap_err();
        assert!(matches!(e, CaFileError::NotUsable { index: 1, .. }), "{e}");

        let dir = std::env::temp_dir();
        assert!(matches!(
            load_ca_file(&dir).unwrap_err(),
            CaFileError::Unreadable { .. }
        ));
    }

    #[test]
    fn certificate_errors_name_the_host_and_the_fix() {
        let unknown = describe(
            &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            "engine.example",
        );
        assert!(
            unknown.contains("\"engine.example\"")
                && unknown.contains("does not trust")
                && unknown.contains(CA_FILE_ENV),
            "{unknown}"
        );
        let name = describe(
            &rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
            "10.0.0.1",
        );
        assert!(name.contains("not valid for the name \"10.0.0.1\""), "{name}");
        let expired = describe(&rustls::Error::InvalidCertificate(CertificateError::Expired), "h");
        assert!(expired.contains("validity"), "{expired}");
    }

    #[test]
    fn a_pem_ca_loads_and_builds_a_config() {
        let ca = temp("ca.pem", CA_PEM.as_bytes());
        assert_eq!(load_ca_file(&ca).unwrap().len(), 1);
        let two = temp("two.pem", format!("{CA_PEM}\n{CA_PEM}").as_bytes());
        assert_eq!(load_ca_file(&two).unwrap().len(), 2);
        assert!(client_config(Some(&ca)).is_ok());
        assert!(client_config(None).is_ok());
        assert!(client_config(Some(Path::new("/nonexistent/ca.pem"))).is_err());
    }
}
