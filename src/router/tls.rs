//! TLS for the router's engine connection (`https://` / `wss://`): rustls, no OpenSSL.
//!
//! Trust is the system's store (rustls-native-certs: Debian's /etc/ssl/certs, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`) plus an optional CA file of the user's ([`CA_FILE_ENV`], the add-on preference):
//! a hosted engine has a public certificate, a self-hosted one often a private CA. Hostnames are
//! verified (rustls' default). The crypto provider is ring: aws-lc-rs builds here too (no cmake
//! needed), but a clean release build of rustls with it took 65 s against ring's 36 s, and its
//! binary was 2.2 MB larger; nothing here needs its FIPS mode or post-quantum key exchange.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
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
            // rustls words these for a peer's certificate ("invalid peer certificate: ...").
            why: match e {
                rustls::Error::InvalidCertificate(c) => format!("not a well-formed X.509 certificate ({c})"),
                other => other.to_string(),
            },
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
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        // The ring provider supports the default versions; this cannot fail with it.
        .unwrap_or_else(|e| unreachable!("ring lacks TLS 1.2/1.3: {e}"));
    // rustls' own verifier (chain, name, dates); with no root at all it cannot be built, and
    // every certificate is refused as by an empty store.
    let config = match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build() {
        Ok(inner) => config
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(IssuerNaming { inner })),
        Err(_) => config.with_root_certificates(RootCertStore::empty()),
    };
    Ok(Arc::new(config.with_no_client_auth()))
}

/// An issuer that none of the trusted CAs is: named, so that the error says which CA to trust.
#[derive(Debug, thiserror::Error)]
#[error("unknown issuer {issuer}")]
pub struct UntrustedIssuer {
    pub issuer: String,
}

/// rustls' verifier, unchanged, except that an unknown issuer is named ([`UntrustedIssuer`]):
/// rustls reports only that there is one.
#[derive(Debug)]
struct IssuerNaming {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for IssuerNaming {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                    // The top of the chain the engine sent is the one whose issuer is unknown.
                    let top = intermediates.last().unwrap_or(end_entity);
                    match issuer_name(top) {
                        Some(issuer) => rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                            Arc::new(UntrustedIssuer { issuer }),
                        ))),
                        None => e,
                    }
                }
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One DER element: (tag, contents, what follows). `None` on anything malformed.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, start) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), 2 + n)
    };
    let end = start.checked_add(len)?;
    Some((tag, input.get(start..end)?, input.get(end..)?))
}

/// The issuer of an X.509 certificate as `CN=..., O=...` (its common name and organisation), read
/// straight from the DER; `None` if it has neither or is not well formed.
fn issuer_name(cert: &[u8]) -> Option<String> {
    let (_, certificate, _) = der(cert)?;
    let (_, tbs, _) = der(certificate)?;
    let (tag, _, mut rest) = der(tbs)?;
    if tag == 0xa0 {
        // [0] version; the serial number follows.
        rest = der(rest)?.2;
    }
    let (_, _, rest) = der(rest)?; // the signature algorithm
    let (_, mut rdns, _) = der(rest)?; // the issuer Name: SEQUENCE OF SET OF (OID, value)
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (_, mut set, next) = der(rdns)?;
        rdns = next;
        while !set.is_empty() {
            let (_, pair, next) = der(set)?;
            set = next;
            let (_, oid, value) = der(pair)?;
            let (_, value, _) = der(value)?;
            let label = match oid {
                [0x55, 0x04, 0x03] => "CN",
                [0x55, 0x04, 0x0a] => "O",
                _ => continue,
            };
            parts.push(format!("{label}={}", String::from_utf8_lossy(value)));
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A failed TLS handshake with `host`, said so that the user knows what to change.
pub fn describe(err: &rustls::Error, host: &str) -> String {
    let fix_ca = format!(
        "if the engine's certificate comes from a private CA, set {CA_FILE_ENV} (or the add-on's CA file \
         preference) to that CA's PEM file"
    );
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Other(OtherError(inner)) if inner.downcast_ref::<UntrustedIssuer>().is_some() => {
                let issuer = inner
                    .downcast_ref::<UntrustedIssuer>()
                    .map_or("", |u| u.issuer.as_str());
                format!(
                    "the certificate the engine presented for {host:?} is signed by {issuer:?}, an issuer this \
                     router does not trust; {fix_ca}"
                )
            }
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
        assert!(
            e.to_string()
                .ends_with("certificate 1): not a well-formed X.509 certificate (BadEncoding)"),
            "{e}"
        );

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
        let named = describe(
            &rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(UntrustedIssuer {
                issuer: "CN=rogue".into(),
            })))),
            "h",
        );
        assert!(
            named.contains("signed by \"CN=rogue\", an issuer this router does not trust"),
            "{named}"
        );
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
        let der = load_ca_file(&ca).unwrap().remove(0);
        assert_eq!(issuer_name(&der).as_deref(), Some("CN=blendwire-unit-ca"));
        assert_eq!(issuer_name(&der[..40]), None, "cut short");
        assert_eq!(issuer_name(b""), None);
        assert!(client_config(None).is_ok());
        assert!(client_config(Some(Path::new("/nonexistent/ca.pem"))).is_err());
    }
}
