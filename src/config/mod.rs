//! Settings: everything rowsync reads from the environment (or a `.env` file) at start-up.
//! The old Django service's variable names keep working; parsing and error messages come from clap.
//!
//! One file per group: `database` (with libpq's TLS parameters in `database_tls`), `kafka`,
//! `topics`, `group` (consumer groups), `auth`, `listing`; `secrets` reads the `*_FILE` variables. Each type is re-exported here.

mod auth;
mod database;
mod database_tls;
mod group;
mod http;
mod kafka;
mod listing;
pub mod pem;
mod secrets;
mod topics;

use std::net::SocketAddr;

pub use auth::AuthSettings;
pub use database::{DatabaseSettings, PgSettings};
pub use database_tls::{PgTlsSettings, SettingPath, SslMode};
pub use group::GroupSettings;
pub use http::HttpSettings;
pub use kafka::{
    EndpointIdentification, KafkaCompression, KafkaSaslMechanism, KafkaSecurityProtocol,
    KafkaSettings,
};
pub use listing::ListingSettings;
pub use secrets::parse_secret_file;
pub use topics::TopicSettings;

/// All settings of one rowsync process.
///
/// Built once at start-up by the command line (`cli::Cli`) from environment variables, then
/// shared read-only. Tests build it directly.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    #[command(flatten)]
    pub topics: TopicSettings,
    /// How replicas share partitions through Kafka's consumer groups.
    #[command(flatten)]
    pub group: GroupSettings,
    /// Address the REST API listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8000")]
    pub listen_addr: SocketAddr,
    #[command(flatten)]
    pub auth: AuthSettings,
    /// Limits of the API's connections (header and keep-alive timeouts, most connections).
    #[command(flatten)]
    pub http: HttpSettings,
    /// Limits of the streamed listings (`LISTING_MAX_CONCURRENT`, `HTTP_SEND_TIMEOUT_MS`).
    #[command(flatten)]
    pub listing: ListingSettings,
}

/// The command line of the config tests: [`Settings`] alone, parsed as `cli` parses it (this
/// module cannot use `cli`, which uses it), with a malformed setting as one line.
#[cfg(test)]
mod test_support {
    use clap::Parser;

    use super::{DatabaseSettings, Settings};

    /// What the command line made.
    #[derive(Debug, Parser)]
    #[command(name = "rowsync")]
    pub struct Parsed {
        #[command(flatten)]
        pub settings: Settings,
    }

    pub const URL: &str = "--database-url";

    /// `args` after the program name and a Kafka host; an error is clap's message on one line.
    pub fn parse(args: &[&str]) -> Result<Parsed, String> {
        let base = ["rowsync", "--kafka-host", "k"];
        Parsed::try_parse_from(base.iter().chain(args)).map_err(|error| {
            let rendered = error.render().to_string();
            let message = rendered.split("\n\n").next().unwrap_or_default();
            message.lines().map(str::trim).collect::<Vec<_>>().join(" ")
        })
    }

    pub fn database(args: &[&str]) -> DatabaseSettings {
        parse(args).expect("valid arguments").settings.database
    }

    pub fn invalid(args: &[&str]) -> String {
        match parse(args) {
            Err(line) => line,
            Ok(_) => panic!("expected an invalid-setting error, got valid settings"),
        }
    }
}
