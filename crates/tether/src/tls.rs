//! TLS (rustls with the `ring` provider) for the main channel and for streams.
//!
//! * [`ServerTls`]: certificate chain and key from PEM; optionally a CA whose client
//!   certificates are required (mutual TLS).
//! * [`ClientTls`]: the CAs to trust, the name to verify (default: the server's IP address),
//!   and optionally a client certificate.
//! * [`PeerCertificate`]: subject, issuer, validity and DER of the other side's certificate,
//!   for handlers ([`crate::ClientHandle::peer_certificate`]) and for the client
//!   ([`crate::Client::peer_certificate`]).
//!
//! Under TLS there is no quick (UDP) channel, on either side (docs/protocols/vsoa.md §5).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::Error;

/// TLS errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A TLS setup that cannot be used (files, PEM, certificate and key mismatch).
    #[error("TLS configuration: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
    /// The TLS handshake failed (untrusted or expired certificate, wrong name, ...).
    #[error("TLS handshake with {addr} failed: {detail}")]
    Handshake {
        /// The peer.
        addr: std::net::SocketAddr,
        /// What rustls said.
        detail: String,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: impl std::fmt::Display) -> Error {
    Error::Tls(crate::tls::TlsError::Config {
        detail: what.to_string(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| tls_error(format!("cannot read {}: {e}", path.display())))
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(format!("{what}: not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(format!("{what}: no certificate found")));
    }
    Ok(certs)
}

fn key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, Error> {
    if pem.windows(21).any(|w| w == b"ENCRYPTED PRIVATE KEY") {
        return Err(tls_error(format!(
            "{what} is encrypted: give its password (tls::decrypt_private_key, --tls-key-password)"
        )));
    }
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| tls_error(format!("{what}: no private key: {e}")))
}

fn roots(pem: &[u8], what: &str) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    for cert in certs(pem, what)? {
        store
            .add(cert)
            .map_err(|e| tls_error(format!("{what}: unusable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// Decrypts a password-protected private key (PEM `ENCRYPTED PRIVATE KEY`, PKCS#8 with
/// PBES2, as `openssl pkey -aes256` and `openssl genpkey -aes256` write it) into the plain
/// PEM that [`ServerTls`] and [`ClientTls`] take (Python's `sslopt` `passwd`). A wrong
/// password is an error that says so; a key that is not encrypted is returned as it is.
pub fn decrypt_private_key(pem: &[u8], password: &str) -> Result<Vec<u8>, Error> {
    use pkcs8::der::pem::LineEnding;
    let text = std::str::from_utf8(pem).map_err(|_| tls_error("the key file is not PEM text"))?;
    let (label, doc) = pkcs8::der::SecretDocument::from_pem(text)
        .map_err(|e| tls_error(format!("not a PEM private key: {e}")))?;
    if label != "ENCRYPTED PRIVATE KEY" {
        return Ok(pem.to_vec());
    }
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
        .map_err(|e| tls_error(format!("unreadable encrypted private key: {e}")))?;
    let plain = info.decrypt(password).map_err(|e| {
        tls_error(format!(
            "cannot decrypt the private key (wrong password, or an unsupported cipher): {e}"
        ))
    })?;
    let out = plain
        .to_pem("PRIVATE KEY", LineEnding::LF)
        .map_err(|e| tls_error(format!("decrypted key: {e}")))?;
    Ok(out.as_bytes().to_vec())
}

/// Whether a server asks clients for certificates (Python's `CERT_NONE`, `CERT_OPTIONAL`,
/// `CERT_REQUIRED`), with the CA(s) whose certificates it accepts (PEM).
#[derive(Debug, Clone, Copy)]
pub enum ClientAuth<'a> {
    /// No client certificates.
    None,
    /// A client may present a certificate; if it does, it must be signed by one of these
    /// CAs (a wrong one is refused). Handlers see it in `ClientHandle::peer_certificate`.
    Optional(&'a [u8]),
    /// Every client must present a certificate signed by one of these CAs (mutual TLS).
    Required(&'a [u8]),
}

/// One certificate a server presents for the names in it, chosen by SNI
/// ([`ServerTls::by_name`]).
#[derive(Debug, Clone, Copy)]
pub struct NamedCert<'a> {
    /// The host name clients ask for (SNI).
    pub name: &'a str,
    /// Its certificate chain (PEM).
    pub chain: &'a [u8],
    /// Its private key (PEM).
    pub private_key: &'a [u8],
}

/// Picks a server certificate by the name the client asked for, else the first.
#[derive(Debug)]
struct BySni {
    named: Vec<(String, Arc<rustls::sign::CertifiedKey>)>,
}

impl rustls::server::ResolvesServerCert for BySni {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let asked = hello.server_name();
        let chosen = asked
            .and_then(|n| {
                self.named
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(n))
            })
            .or_else(|| self.named.first());
        chosen.map(|(_, k)| k.clone())
    }
}

/// A server's TLS setup.
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish()
    }
}

impl ServerTls {
    /// From PEM text: the certificate chain, its private key, and optionally the CA(s) whose
    /// client certificates are required (mutual TLS).
    pub fn from_pem(
        chain: &[u8],
        private_key: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<Self, Error> {
        let auth = client_ca.map_or(ClientAuth::None, ClientAuth::Required);
        Self::with_client_auth(chain, private_key, auth)
    }

    /// From PEM text, with client certificates none, optional or required.
    pub fn with_client_auth(
        chain: &[u8],
        private_key: &[u8],
        auth: ClientAuth<'_>,
    ) -> Result<Self, Error> {
        let config = Self::config(auth)?
            .with_single_cert(
                certs(chain, "server certificate")?,
                key(private_key, "server key")?,
            )
            .map_err(|e| tls_error(format!("server certificate and key do not fit: {e}")))?;
        Ok(Self::of(config, auth))
    }

    /// Several certificates, each presented to the clients that ask for its name (SNI;
    /// Python's `sni_callback`), the first to clients that ask for none or another (a
    /// client connecting to an IP address sends no name).
    pub fn by_name(certs_by_name: &[NamedCert<'_>], auth: ClientAuth<'_>) -> Result<Self, Error> {
        if certs_by_name.is_empty() {
            return Err(tls_error("no certificate given"));
        }
        let provider = provider();
        let mut named = Vec::new();
        for n in certs_by_name {
            let what = format!("certificate for {}", n.name);
            let key = provider
                .key_provider
                .load_private_key(key(n.private_key, &what)?)
                .map_err(|e| tls_error(format!("{what}: unusable key: {e}")))?;
            let certified = rustls::sign::CertifiedKey::new(certs(n.chain, &what)?, key);
            certified
                .keys_match()
                .map_err(|e| tls_error(format!("{what}: certificate and key do not fit: {e}")))?;
            named.push((n.name.to_string(), Arc::new(certified)));
        }
        let config = Self::config(auth)?.with_cert_resolver(Arc::new(BySni { named }));
        Ok(Self::of(config, auth))
    }

    fn config(
        auth: ClientAuth<'_>,
    ) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, Error> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?;
        let verifier = |ca: &[u8], optional: bool| {
            let b = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca, "client CA")?),
                provider(),
            );
            let b = if optional {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build().map_err(tls_error)
        };
        Ok(match auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional(ca) => builder.with_client_cert_verifier(verifier(ca, true)?),
            ClientAuth::Required(ca) => builder.with_client_cert_verifier(verifier(ca, false)?),
        })
    }

    fn of(config: ServerConfig, auth: ClientAuth<'_>) -> Self {
        ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            mutual: matches!(auth, ClientAuth::Required(_)),
        }
    }

    /// Like [`ServerTls::from_pem`], reading files.
    pub fn from_pem_files(
        chain: &Path,
        private_key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Self, Error> {
        let ca = client_ca.map(read).transpose()?;
        Self::from_pem(&read(chain)?, &read(private_key)?, ca.as_deref())
    }

    /// Runs the server side of a TLS handshake on `stream` (for other listeners of the same
    /// server, such as the WebSocket gateway).
    pub async fn accept<S>(&self, stream: S) -> std::io::Result<tokio_rustls::server::TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.acceptor.accept(stream).await
    }
}

/// A client's TLS setup.
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) connector: tokio_rustls::TlsConnector,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Trusting the CA(s) in `ca` (PEM), optionally presenting a client certificate chain and
    /// key (PEM) for mutual TLS.
    pub fn from_pem(ca: &[u8], client_cert: Option<(&[u8], &[u8])>) -> Result<Self, Error> {
        Self::with_roots(roots(ca, "CA")?, client_cert)
    }

    /// Trusting the system's CA certificates (Python's `load_default_certs`: the
    /// distribution's bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set), and the ones
    /// in `ca` too if given. Certificates of the bundle that cannot be used are skipped and
    /// logged; none at all is an error.
    pub fn with_system_roots(
        ca: Option<&[u8]>,
        client_cert: Option<(&[u8], &[u8])>,
    ) -> Result<Self, Error> {
        let mut store = match ca {
            Some(pem) => roots(pem, "CA")?,
            None => RootCertStore::empty(),
        };
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!("system CA certificates: {e}");
        }
        let (added, skipped) = store.add_parsable_certificates(found.certs);
        if skipped > 0 {
            tracing::debug!("{skipped} system CA certificates could not be used");
        }
        if added == 0 && ca.is_none() {
            return Err(tls_error(
                "no usable system CA certificates (set SSL_CERT_FILE, or give a CA)",
            ));
        }
        Self::with_roots(store, client_cert)
    }

    fn with_roots(
        store: RootCertStore,
        client_cert: Option<(&[u8], &[u8])>,
    ) -> Result<Self, Error> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_root_certificates(store);
        Self::finish(builder, client_cert)
    }

    /// The client certificate (if any), and the connector.
    fn finish(
        builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
        client_cert: Option<(&[u8], &[u8])>,
    ) -> Result<Self, Error> {
        let config = match client_cert {
            Some((chain, private_key)) => builder
                .with_client_auth_cert(
                    certs(chain, "client certificate")?,
                    key(private_key, "client key")?,
                )
                .map_err(|e| tls_error(format!("client certificate and key do not fit: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name: None,
        })
    }

    /// Like [`ClientTls::from_pem`], reading files.
    pub fn from_pem_files(ca: &Path, client_cert: Option<(&Path, &Path)>) -> Result<Self, Error> {
        let cert = client_cert
            .map(|(c, k)| Ok::<_, Error>((read(c)?, read(k)?)))
            .transpose()?;
        Self::from_pem(
            &read(ca)?,
            cert.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        )
    }

    /// **For test benches only**: accepts any server certificate (untrusted, expired, for
    /// another name), checking only that the server holds its key. Anyone on the path can
    /// read and change the traffic. Logs a warning when made. (Python's `CERT_NONE` on the
    /// client side.)
    pub fn danger_accept_any_server_certificate(
        client_cert: Option<(&[u8], &[u8])>,
    ) -> Result<Self, Error> {
        tracing::warn!(
            "TLS without server verification: for test benches only, anyone on the path can \
             read and change this traffic"
        );
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider())));
        Self::finish(builder, client_cert)
    }

    /// The name to send (SNI) and to verify in the server's certificate. Default: the
    /// server's IP address (the certificate then needs that IP as a subject alternative name).
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Runs the client side of a TLS handshake on `stream`, a connection to `addr` (for
    /// other clients of the same deployment, such as the juggler client).
    pub async fn connect<S>(
        &self,
        stream: S,
        addr: std::net::SocketAddr,
    ) -> Result<tokio_rustls::client::TlsStream<S>, Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = self.name_for(addr.ip())?;
        self.connector.connect(name, stream).await.map_err(|e| {
            Error::Tls(crate::tls::TlsError::Handshake {
                addr,
                detail: e.to_string(),
            })
        })
    }

    pub(crate) fn name_for(&self, ip: IpAddr) -> Result<ServerName<'static>, Error> {
        match &self.server_name {
            Some(n) => ServerName::try_from(n.clone())
                .map_err(|e| tls_error(format!("server name {n:?}: {e}"))),
            None => Ok(ServerName::IpAddress(ip.into())),
        }
    }
}

/// A subject alternative name of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectAltName {
    /// `DNS:` a host name.
    Dns(String),
    /// `IP Address:`.
    Ip(IpAddr),
    /// `email:` an RFC 822 name.
    Email(String),
    /// `URI:`.
    Uri(String),
    /// Any other kind, as text.
    Other(String),
}

/// The other side's certificate, as presented in the TLS handshake: the fields Python's
/// `getpeercert()` gives (version, serial number, subject, issuer, validity, subject
/// alternative names) and the DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The X.509 version as people count it (3 for a v3 certificate, as Python reports).
    pub version: u32,
    /// The serial number in upper-case hex, without separators (Python's `serialNumber`).
    pub serial_number: String,
    /// Subject distinguished name, e.g. `CN=drone-7`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Subject alternative names, in the certificate's order (Python's `subjectAltName`).
    pub subject_alt_names: Vec<SubjectAltName>,
    /// The certificate, DER-encoded.
    pub der: Vec<u8>,
}

impl PeerCertificate {
    pub(crate) fn parse(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let time = |t: x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            if secs >= 0 {
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
            } else {
                SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            }
        };
        use x509_parser::extensions::GeneralName;
        let subject_alt_names = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext
                .value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::DNSName(d) => SubjectAltName::Dns(d.to_string()),
                    GeneralName::RFC822Name(e) => SubjectAltName::Email(e.to_string()),
                    GeneralName::URI(u) => SubjectAltName::Uri(u.to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            SubjectAltName::Ip(IpAddr::from(v4))
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            SubjectAltName::Ip(IpAddr::from(v6))
                        } else {
                            SubjectAltName::Other(format!("IP Address:{b:02X?}"))
                        }
                    }
                    other => SubjectAltName::Other(other.to_string()),
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(PeerCertificate {
            version: cert.version().0 + 1,
            serial_number: cert
                .raw_serial()
                .iter()
                .skip_while(|b| **b == 0)
                .map(|b| format!("{b:02X}"))
                .collect(),
            subject_alt_names,
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
            der: der.to_vec(),
        })
    }

    pub(crate) fn first_of(chain: Option<&[CertificateDer<'_>]>) -> Option<Arc<Self>> {
        chain?.first().and_then(|c| Self::parse(c)).map(Arc::new)
    }
}

/// Accepts any server certificate; still checks the handshake signatures, so the server
/// must hold the key of the certificate it sent.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
