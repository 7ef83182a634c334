//! Where PostgreSQL is and how rowsync uses it ([`DatabaseSettings`]), and the connection
//! settings they make ([`PgSettings`]): `DATABASE_URL` or the `DB_*` parts, the password (or
//! its file), the schema, and TLS ([`database_tls`](super::database_tls)).

use std::{path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};

use super::{
    database_tls::{split_tls_params, PgTlsSettings, SettingPath, SslMode, TlsParams},
    secrets::{parse_secret, parse_secret_file},
};
use crate::error::error_chain;

/// Where PostgreSQL is and how rowsync uses it.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseSettings {
    /// Full connection string (`postgres://user:password@host:port/db`); overrides the `DB_*` parts.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: Option<SecretString>,
    /// PostgreSQL host.
    #[arg(long, env = "DB_HOST", required_unless_present = "database_url")]
    pub db_host: Option<String>,
    /// PostgreSQL port.
    #[arg(long, env = "DB_PORT", default_value_t = 5432)]
    pub db_port: u16,
    /// Database name.
    #[arg(long, env = "DB_NAME", required_unless_present = "database_url")]
    pub db_name: Option<String>,
    /// PostgreSQL user.
    #[arg(long, env = "POSTGRES_USER", required_unless_present = "database_url")]
    pub postgres_user: Option<String>,
    /// PostgreSQL password (never logged).
    #[arg(long, env = "POSTGRES_PASSWORD", hide_env_values = true, value_parser = parse_secret)]
    pub postgres_password: Option<SecretString>,
    /// File holding the PostgreSQL password (Docker and Kubernetes secrets), one trailing newline
    /// trimmed; instead of `POSTGRES_PASSWORD`, never with it.
    #[arg(
        long,
        env = "POSTGRES_PASSWORD_FILE",
        value_parser = parse_secret_file,
        conflicts_with = "postgres_password"
    )]
    pub postgres_password_file: Option<SecretString>,
    /// TLS to PostgreSQL, as libpq's `sslmode`: `disable`, `prefer` (TLS when the server offers
    /// it, the default), `require` (TLS; the certificate is checked only against an explicit
    /// `DB_SSLROOTCERT`), `verify-ca` (the chain) or `verify-full` (the chain and the host name).
    /// An `sslmode` in `DATABASE_URL` wins.
    #[arg(long, env = "DB_SSLMODE", value_enum)]
    pub db_sslmode: Option<SslMode>,
    /// PEM file of the certificate authorities trusted for the server's certificate (default:
    /// Mozilla's roots, built in). An `sslrootcert` in `DATABASE_URL` wins.
    #[arg(long, env = "DB_SSLROOTCERT")]
    pub db_sslrootcert: Option<PathBuf>,
    /// PEM file of the client certificate (with its chain) to present; needs `DB_SSLKEY`.
    /// An `sslcert` in `DATABASE_URL` wins.
    #[arg(long, env = "DB_SSLCERT")]
    pub db_sslcert: Option<PathBuf>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1). An `sslkey`
    /// in `DATABASE_URL` wins.
    #[arg(long, env = "DB_SSLKEY")]
    pub db_sslkey: Option<PathBuf>,
    /// Schema holding rowsync's tables (created if missing); PostgreSQL's search path when unset.
    #[arg(long, env = "DB_SCHEMA", value_parser = parse_identifier)]
    pub db_schema: Option<String>,
    /// Upper bound, in milliseconds, on any single PostgreSQL operation (a query, applying a batch).
    #[arg(long, env = "DB_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub db_timeout_ms: u64,
    /// Most connections the pool opens.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_pool_size: u32,
    /// A pooled connection left unused this long, in milliseconds, is closed, all but the most
    /// recently used one (HikariCP's `idleTimeout` with one idle connection kept): each keeps
    /// buffers as large as the largest batch it carried, which a quiet replica gives back; the
    /// pool opens connections again on demand.
    #[arg(long, env = "DB_POOL_IDLE_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1_000..))]
    pub db_pool_idle_timeout_ms: u64,
}

/// Everything needed to open a PostgreSQL connection.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// For tokio-postgres: the TLS parameters it does not know are taken out, and verify-* is
    /// `Require` (the verifier does the rest).
    pub config: tokio_postgres::Config,
    pub tls: PgTlsSettings,
}

impl DatabaseSettings {
    /// The PostgreSQL connection settings; the schema, when set, becomes the search path.
    ///
    /// `DATABASE_URL`'s own parameters win; `DB_SSL*` and `POSTGRES_PASSWORD(_FILE)` fill in
    /// what it does not say. Errors never repeat the URL (it may hold a password).
    pub fn pg_config(&self) -> anyhow::Result<PgSettings> {
        let (mut config, from_url) = match &self.database_url {
            Some(url) => {
                let (rest, params) = split_tls_params(url.expose_secret()).map_err(|e| {
                    anyhow::anyhow!("DATABASE_URL is not a valid connection string: {e}")
                })?;
                let config = rest
                    .parse::<tokio_postgres::Config>()
                    // The parser's message never repeats the URL, so no password leaks here.
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "DATABASE_URL is not a valid connection string: {}",
                            error_chain(&e)
                        )
                    })?;
                (config, params)
            }
            None => {
                let mut config = tokio_postgres::Config::new();
                config
                    .host(self.db_host.as_deref().unwrap_or("localhost"))
                    .port(self.db_port)
                    .dbname(self.db_name.as_deref().unwrap_or("postgres"))
                    .user(self.postgres_user.as_deref().unwrap_or("postgres"));
                (config, TlsParams::default())
            }
        };
        if config.get_password().is_none() {
            if let Some(password) = self.password() {
                config.password(password.expose_secret());
            }
        }
        if let Some(schema) = &self.db_schema {
            config.options(format!("-c search_path={schema}"));
        }
        if config.get_application_name().is_none() {
            config.application_name("rowsync");
        }
        config.connect_timeout(Duration::from_secs(5));

        let mode = match &from_url.sslmode {
            Some(value) => SslMode::from_libpq(value).ok_or_else(|| {
                anyhow::anyhow!(
                    "DATABASE_URL's sslmode must be disable, prefer, require, verify-ca or verify-full"
                )
            })?,
            None => self.db_sslmode.unwrap_or_default(),
        };
        let pick = |url: Option<String>,
                    url_setting: &'static str,
                    own: &Option<PathBuf>,
                    setting: &'static str| {
            url.map(|path| SettingPath {
                path: path.into(),
                setting: url_setting,
            })
            .or_else(|| own.clone().map(|path| SettingPath { path, setting }))
        };
        let tls = PgTlsSettings {
            mode,
            root_cert: pick(
                from_url.sslrootcert,
                "sslrootcert in DATABASE_URL",
                &self.db_sslrootcert,
                "DB_SSLROOTCERT",
            ),
            client_cert: pick(
                from_url.sslcert,
                "sslcert in DATABASE_URL",
                &self.db_sslcert,
                "DB_SSLCERT",
            ),
            client_key: pick(
                from_url.sslkey,
                "sslkey in DATABASE_URL",
                &self.db_sslkey,
                "DB_SSLKEY",
            ),
        };
        // PostgreSQL offers no TLS over Unix-domain sockets; libpq ignores sslmode there.
        #[cfg(unix)]
        let only_sockets = config.get_hostaddrs().is_empty()
            && !config.get_hosts().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|host| matches!(host, tokio_postgres::config::Host::Unix(_)));
        #[cfg(not(unix))]
        let only_sockets = false;
        config.ssl_mode(match tls.mode {
            _ if only_sockets => tokio_postgres::config::SslMode::Disable,
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        Ok(PgSettings { config, tls })
    }

    /// The password from `POSTGRES_PASSWORD` or `POSTGRES_PASSWORD_FILE` (never both).
    pub fn password(&self) -> Option<&SecretString> {
        self.postgres_password
            .as_ref()
            .or(self.postgres_password_file.as_ref())
    }

    /// Upper bound on any single PostgreSQL operation.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms)
    }

    /// How long a pooled connection may stay unused before it is closed.
    pub fn pool_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.db_pool_idle_timeout_ms)
    }

    /// The schema rowsync's tables live in.
    pub fn schema(&self) -> &str {
        self.db_schema.as_deref().unwrap_or("public")
    }
}

/// A schema name must be a plain lowercase identifier: it is spliced into SQL and options.
fn parse_identifier(value: &str) -> Result<String, String> {
    let mut chars = value.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if valid_start
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && value.len() <= 63
    {
        Ok(value.to_owned())
    } else {
        Err("must be a lowercase identifier ([a-z_][a-z0-9_]*, at most 63 bytes)".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{database, invalid, URL};

    #[test]
    fn sslmode_defaults_to_prefer_and_verify_modes_run_as_require() {
        use tokio_postgres::config::SslMode as Pg;
        let pg = database(&[URL, "postgres://u@db/x"]).pg_config().unwrap();
        assert_eq!(pg.tls.mode, SslMode::Prefer);
        assert_eq!(pg.config.get_ssl_mode(), Pg::Prefer);
        for (mode, expected, pg_mode) in [
            ("disable", SslMode::Disable, Pg::Disable),
            ("prefer", SslMode::Prefer, Pg::Prefer),
            ("require", SslMode::Require, Pg::Require),
            ("verify-ca", SslMode::VerifyCa, Pg::Require),
            ("verify-full", SslMode::VerifyFull, Pg::Require),
        ] {
            let from_env = database(&[URL, "postgres://u@db/x", "--db-sslmode", mode])
                .pg_config()
                .unwrap();
            assert_eq!(from_env.tls.mode, expected, "{mode}");
            assert_eq!(from_env.config.get_ssl_mode(), pg_mode, "{mode}");
            let url = format!("postgres://u@db/x?sslmode={mode}");
            let from_url = database(&[URL, &url]).pg_config().unwrap();
            assert_eq!(from_url.tls.mode, expected, "{mode}");
            assert_eq!(from_url.config.get_ssl_mode(), pg_mode, "{mode}");
        }
    }

    #[test]
    fn the_url_tls_parameters_win_over_the_db_ssl_settings() {
        let url = "postgres://u:pw@db:6432/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem\
                   &application_name=mine&sslcert=/c.pem&sslkey=/k.pem";
        let settings = database(&[
            URL,
            url,
            "--db-sslmode",
            "disable",
            "--db-sslrootcert",
            "/other/ca.pem",
            "--db-sslcert",
            "/other/c.pem",
            "--db-sslkey",
            "/other/k.pem",
        ]);
        let pg = settings.pg_config().unwrap();
        assert_eq!(pg.tls.mode, SslMode::VerifyFull);
        let root = pg.tls.root_cert.unwrap();
        assert_eq!(root.path, PathBuf::from("/etc/ca.pem"));
        assert_eq!(root.setting, "sslrootcert in DATABASE_URL");
        assert_eq!(pg.tls.client_cert.unwrap().path, PathBuf::from("/c.pem"));
        assert_eq!(pg.tls.client_key.unwrap().path, PathBuf::from("/k.pem"));
        // The rest still reaches tokio-postgres; the URL's application name is kept.
        assert_eq!(pg.config.get_application_name(), Some("mine"));
        assert_eq!(pg.config.get_ports(), [6432]);
        assert_eq!(pg.config.get_password(), Some(&b"pw"[..]));

        let settings = database(&[
            URL,
            "postgres://u@db/x",
            "--db-sslmode",
            "verify-ca",
            "--db-sslrootcert",
            "/other/ca.pem",
        ]);
        let pg = settings.pg_config().unwrap();
        assert_eq!(pg.tls.mode, SslMode::VerifyCa);
        let root = pg.tls.root_cert.unwrap();
        assert_eq!(root.path, PathBuf::from("/other/ca.pem"));
        assert_eq!(root.setting, "DB_SSLROOTCERT");
        assert_eq!(pg.config.get_application_name(), Some("rowsync"));
    }

    #[test]
    fn tls_parameters_come_out_of_key_value_connection_strings_too() {
        let settings = database(&[
            URL,
            r"host=db user=u password='a b\'c\\' sslmode=verify-ca sslrootcert='/a b/ca.pem' dbname=x",
        ]);
        let pg = settings.pg_config().unwrap();
        assert_eq!(pg.tls.mode, SslMode::VerifyCa);
        assert_eq!(pg.tls.root_cert.unwrap().path, PathBuf::from("/a b/ca.pem"));
        assert_eq!(pg.config.get_password(), Some(&br"a b'c\"[..]));
        assert_eq!(pg.config.get_dbname(), Some("x"));
    }

    #[test]
    fn a_bad_sslmode_in_the_url_names_it_without_echoing_the_url() {
        let settings = database(&[URL, "postgres://u:hunter2@db/x?sslmode=verify-everything"]);
        let error = format!("{:#}", settings.pg_config().unwrap_err());
        assert!(error.contains("sslmode"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let settings = database(&[URL, "postgres://u:hunter2@db/x?sslcrl=/x"]);
        let error = format!("{:#}", settings.pg_config().unwrap_err());
        assert!(error.contains("DATABASE_URL"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let line = invalid(&[URL, "postgres://u@db/x", "--db-sslmode", "verify"]);
        assert!(line.contains("DB_SSLMODE"), "{line}");
        assert!(line.contains("verify-full"), "{line}");
    }

    #[test]
    fn unix_socket_hosts_never_use_tls_as_in_libpq() {
        let pg = database(&[
            URL,
            "host=/var/run/postgresql user=u dbname=x sslmode=require",
        ])
        .pg_config()
        .unwrap();
        assert_eq!(
            pg.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }
}
