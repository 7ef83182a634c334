//! Support for the PostgreSQL TLS and secret-file tests: a throwaway PostgreSQL cluster of the
//! test's own (password or client-certificate authentication, which the shared one does not ask
//! for), certificates made on the spot, and the `rowsync` binary run with chosen settings.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rowsync::config::Settings;
use tokio::process::Command;

use serde_json::Value;

use crate::{
    api_client::ApiClient,
    helpers::{eventually, DEADLINE},
    process::{command, free_port, RowsyncProcess},
};

/// PostgreSQL 15's programs (Debian's layout).
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..10)
        .map(|_| char::from(b'a' + rng.random_range(0..26)))
        .collect()
}

/// The uid and gid of the `postgres` user (PostgreSQL refuses to run as root).
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("a postgres user (the postgresql package creates it)");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// A command run as the `postgres` user, in `dir`.
fn as_postgres(program: &str, dir: &Path) -> std::process::Command {
    let mut command = std::process::Command::new("setpriv");
    command
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
            &format!("{PG_BIN}/{program}"),
        ])
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null());
    command
}

/// Writes a file the `postgres` user owns (mode 0600: PostgreSQL insists for keys).
pub fn write_for_postgres(path: &Path, contents: &str) {
    std::fs::write(path, contents).expect("writing a cluster file");
    let (uid, gid) = postgres_ids();
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A certificate and its private key, PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `names` (DNS names or IP addresses), with common name `cn`.
    pub fn leaf(&self, cn: &str, names: &[&str]) -> Pem {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A PostgreSQL cluster of the test's own on 127.0.0.1, stopped and removed on drop.
pub struct PgCluster {
    pub port: u16,
    pub dir: PathBuf,
    server: Option<std::process::Child>,
}

/// TLS for a [`PgCluster`]: its certificate, and the CA whose client certificates it trusts.
pub struct ServerTls {
    pub server: Pem,
    pub client_ca: String,
}

impl PgCluster {
    /// `initdb`, `pg_hba.conf` = `local all all trust` plus `hba`, then starts the server and
    /// waits (bounded) until it accepts connections. Passwords are stored as SCRAM-SHA-256.
    pub async fn start(hba: &[&str], tls: Option<&ServerTls>) -> PgCluster {
        let dir = std::env::temp_dir().join(format!("rowsync-pg-{}", random_suffix()));
        std::fs::create_dir(&dir).expect("creating the cluster directory");
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        // From here on, dropping the cluster removes the directory.
        let mut cluster = PgCluster {
            port: free_port(),
            dir,
            server: None,
        };
        let data = cluster.dir.join("data");
        let init = as_postgres("initdb", &cluster.dir)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .expect("running initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&init.stdout),
            String::from_utf8_lossy(&init.stderr)
        );
        let mut hba_conf = String::from("local all all trust\n");
        for line in hba {
            hba_conf.push_str(line);
            hba_conf.push('\n');
        }
        write_for_postgres(&data.join("pg_hba.conf"), &hba_conf);

        let mut settings = vec![
            "listen_addresses=127.0.0.1".to_owned(),
            format!("unix_socket_directories={}", cluster.dir.display()),
            "password_encryption=scram-sha-256".to_owned(),
            "fsync=off".to_owned(),
            "full_page_writes=off".to_owned(),
            "shared_buffers=16MB".to_owned(),
            "max_connections=40".to_owned(),
        ];
        if let Some(tls) = tls {
            cluster.install_server_cert(&tls.server);
            write_for_postgres(&cluster.dir.join("client-ca.crt"), &tls.client_ca);
            settings.extend([
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", cluster.dir.join("server.crt").display()),
                format!("ssl_key_file={}", cluster.dir.join("server.key").display()),
                format!(
                    "ssl_ca_file={}",
                    cluster.dir.join("client-ca.crt").display()
                ),
            ]);
        }
        let log = std::fs::File::create(cluster.dir.join("server.log")).unwrap();
        let mut server = as_postgres("postgres", &cluster.dir);
        server
            .arg("-D")
            .arg(&data)
            .args(["-p", &cluster.port.to_string()]);
        for setting in &settings {
            server.args(["-c", setting]);
        }
        server.stdout(log.try_clone().unwrap()).stderr(log);
        cluster.server = Some(server.spawn().expect("starting postgres"));

        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if cluster.try_superuser().await.is_some() {
                return cluster;
            }
            if let Some(status) = cluster.server.as_mut().unwrap().try_wait().unwrap() {
                panic!("postgres exited ({status}):\n{}", cluster.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "postgres did not accept connections within {DEADLINE:?}:\n{}",
                cluster.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces the server's certificate (takes effect for new connections after [`reload`]).
    ///
    /// [`reload`]: Self::reload
    pub fn install_server_cert(&self, pem: &Pem) {
        write_for_postgres(&self.dir.join("server.crt"), &pem.cert);
        write_for_postgres(&self.dir.join("server.key"), &pem.key);
    }

    /// Re-reads the configuration (and the TLS files) for new connections.
    pub async fn reload(&self) {
        self.superuser()
            .await
            .execute("SELECT pg_reload_conf()", &[])
            .await
            .expect("reloading the configuration");
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    async fn try_superuser(&self) -> Option<tokio_postgres::Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.dir)
            .port(self.port)
            .user("postgres")
            .dbname("postgres");
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.ok()?;
        tokio::spawn(connection);
        Some(client)
    }

    /// A superuser connection over the Unix socket (trusted).
    pub async fn superuser(&self) -> tokio_postgres::Client {
        self.try_superuser()
            .await
            .unwrap_or_else(|| panic!("connecting as the superuser:\n{}", self.log()))
    }

    /// Waits until `app`'s readiness answers 503 with a PostgreSQL check containing `cause`,
    /// dropping role `rowsync`'s sessions meanwhile (logged-in connections would go on working;
    /// the pool must reconnect to meet the change); returns the readiness body.
    pub async fn readiness_fails_with(&self, app: &ApiClient, cause: &str) -> Value {
        let admin = self.superuser().await;
        eventually(&format!("readiness to fail with {cause:?}"), || async {
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'rowsync'",
                    &[],
                )
                .await
                .unwrap();
            let response = app.ready().await;
            let status = response.status();
            let body: Value = response.json().await.ok()?;
            let postgres = body["checks"]["postgres"].as_str()?.to_owned();
            (status == 503 && postgres.contains(cause)).then_some(body)
        })
        .await
    }

    /// Creates a login role that may create rowsync's schema in database `postgres`.
    pub async fn create_user(&self, name: &str, password: Option<&str>) {
        let password = password
            .map(|p| format!(" PASSWORD '{}'", p.replace('\'', "''")))
            .unwrap_or_default();
        self.superuser()
            .await
            .batch_execute(&format!(
                "CREATE ROLE \"{name}\" LOGIN{password}; \
                 GRANT CREATE ON DATABASE postgres TO \"{name}\";"
            ))
            .await
            .expect("creating a role");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // SIGINT: PostgreSQL's fast shutdown; SIGKILL if it takes too long.
            // SAFETY: kill(2) on the pid of a child this cluster started and has not reaped.
            unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGINT) };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while server.try_wait().ok().flatten().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = server.kill();
                    let _ = server.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A file in the temp dir, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!("rowsync-{}-{name}", random_suffix()));
        std::fs::write(&path, contents).expect("writing a temp file");
        Self(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The `rowsync` binary with no inherited environment and every setting of `settings` but
/// PostgreSQL's connection (schema and timeout aside), which `env` gives.
fn rowsync(settings: &Settings, port: u16, env: &[(&str, &str)]) -> Command {
    let mut command = command(settings, port);
    command
        .env("DB_TIMEOUT_MS", settings.database.db_timeout_ms.to_string())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs the binary, expecting it to stop on its own (bounded): its exit code and everything it
/// printed (stdout, where the logs go, then stderr).
pub async fn rowsync_exit(settings: &Settings, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let child = rowsync(settings, free_port(), env)
        .spawn()
        .expect("starting rowsync");
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("rowsync stops on its own within the deadline")
        .expect("waiting for rowsync");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), printed)
}

/// The single line a failed start-up printed; fails the test if there is not exactly one.
pub fn single_line(printed: &str) -> &str {
    let lines: Vec<&str> = printed.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{printed}");
    lines[0]
}

/// Starts the binary and waits (bounded) until `/health/live` answers.
pub async fn start_rowsync(settings: &Settings, env: &[(&str, &str)]) -> RowsyncProcess {
    let port = free_port();
    let mut command = rowsync(settings, port, env);
    // Nobody reads them: the logs must not fill a pipe.
    command.stdout(Stdio::null()).stderr(Stdio::null());
    RowsyncProcess::spawn(command, port).await
}

/// Stops a process gracefully (bounded).
pub async fn stop_rowsync(mut process: RowsyncProcess) {
    process.signal("TERM");
    assert_eq!(process.wait(Duration::from_secs(20)).await, Some(0));
}
