//! TLS for tests: certificates made with rcgen (a CA, server certificates valid, expired or for
//! another name, client certificates), written as PEM files into a temporary directory, and a
//! TLS-terminating proxy (tokio-rustls) in front of a plaintext server, optionally requiring a
//! client certificate.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::test_broker::TempDir;

/// A certificate authority of a test's own; it signs certificates into PEM files in its directory.
pub struct TestCa {
    name: &'static str,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM), for `KAFKA_SSL_CA_LOCATION`.
    pub cert_path: PathBuf,
    dir: Arc<TempDir>,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// From 2020 to 4096.
    Current,
    /// From 2020 to 2021.
    Expired,
}

impl TestCa {
    /// A new CA; its files go to a new temporary directory (removed when the last user goes).
    pub fn new(name: &'static str) -> Self {
        Self::in_dir(name, Arc::new(TempDir::new("rowsync-pki")))
    }

    /// A second CA whose files share `other`'s directory.
    pub fn sibling(&self, name: &'static str) -> Self {
        Self::in_dir(name, Arc::clone(&self.dir))
    }

    fn in_dir(name: &'static str, dir: Arc<TempDir>) -> Self {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("rowsync test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        let cert = params.self_signed(&key).expect("a self-signed CA");
        let cert_path = dir.path().join(format!("ca-{name}.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("writing the CA certificate");
        Self {
            name,
            issuer: Issuer::new(params, key),
            cert_path,
            dir,
        }
    }

    /// The directory the files go to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for these names (DNS names or IP addresses).
    pub fn server_cert(&self, file: &str, names: &[&str], validity: Validity) -> CertFiles {
        self.sign(file, names, validity, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (for mutual TLS).
    pub fn client_cert(&self, file: &str, name: &str) -> CertFiles {
        self.sign(
            file,
            &[name],
            Validity::Current,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn sign(
        &self,
        file: &str,
        names: &[&str],
        validity: Validity,
        usage: ExtendedKeyUsagePurpose,
    ) -> CertFiles {
        let key = KeyPair::generate().expect("a key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("certificate parameters");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![usage];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        if validity == Validity::Expired {
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a signed certificate");
        let files = CertFiles {
            cert: self.dir().join(format!("{}-{file}.pem", self.name)),
            key: self.dir().join(format!("{}-{file}.key", self.name)),
        };
        std::fs::write(&files.cert, cert.pem()).expect("writing a certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("writing a key");
        files
    }
}

/// A server configuration presenting `server`, requiring a client certificate signed by
/// `client_ca` when given.
pub fn server_config(server: &CertFiles, client_ca: Option<&Path>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).expect("the client CA") {
                roots.add(cert.expect("a CA certificate")).expect("a root");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = CertificateDer::pem_file_iter(&server.cert)
        .expect("the server certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates");
    let key = PrivateKeyDer::from_pem_file(&server.key).expect("the server key");
    Arc::new(
        builder
            .with_single_cert(chain, key)
            .expect("a server configuration"),
    )
}

/// A TLS-terminating proxy: accepts TLS on a free local port and forwards the plaintext to
/// `upstream`. Stops when dropped.
pub struct TlsProxy {
    pub addr: SocketAddr,
    config: Arc<Mutex<Arc<ServerConfig>>>,
    /// Cancelled to close every open connection.
    connections: Arc<Mutex<CancellationToken>>,
    handshakes: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    accept_loop: JoinHandle<()>,
}

impl TlsProxy {
    /// Binds a free port now; forwards to `upstream` (which may start later).
    pub async fn start(upstream: SocketAddr, config: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the TLS proxy");
        let addr = listener.local_addr().unwrap();
        let config = Arc::new(Mutex::new(config));
        let connections = Arc::new(Mutex::new(CancellationToken::new()));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let accept_loop = tokio::spawn({
            let (config, connections) = (Arc::clone(&config), Arc::clone(&connections));
            let (handshakes, refused) = (Arc::clone(&handshakes), Arc::clone(&refused));
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let acceptor = TlsAcceptor::from(Arc::clone(&config.lock().unwrap()));
                    let cancelled = connections.lock().unwrap().clone();
                    let (handshakes, refused) = (Arc::clone(&handshakes), Arc::clone(&refused));
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = cancelled.cancelled() => {}
                            _ = serve(inbound, upstream, acceptor, handshakes, refused) => {}
                        }
                    });
                }
            }
        });
        Self {
            addr,
            config,
            connections,
            handshakes,
            refused,
            accept_loop,
        }
    }

    /// Presents another configuration to new connections.
    pub fn set_config(&self, config: Arc<ServerConfig>) {
        *self.config.lock().unwrap() = config;
    }

    /// Closes every open connection (new ones are accepted as usual).
    pub fn cut_connections(&self) {
        let mut token = self.connections.lock().unwrap();
        token.cancel();
        *token = CancellationToken::new();
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// TLS handshakes refused so far (by the proxy, or by the client).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        self.connections.lock().unwrap().cancel();
    }
}

async fn serve(
    inbound: TcpStream,
    upstream: SocketAddr,
    acceptor: TlsAcceptor,
    handshakes: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
) {
    let _ = inbound.set_nodelay(true);
    let mut tls = match acceptor.accept(inbound).into_fallible().await {
        Ok(tls) => tls,
        Err((_, mut tcp)) => {
            refused.fetch_add(1, Ordering::SeqCst);
            // The alert is written; read what the client still sends until it closes, so that
            // closing does not reset the connection before the client has read the alert.
            let mut buffer = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while matches!(tcp.read(&mut buffer).await, Ok(n) if n > 0) {}
            })
            .await;
            return;
        }
    };
    handshakes.fetch_add(1, Ordering::SeqCst);
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
}
