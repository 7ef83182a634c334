//! The command line: `rowsync` serves, `rowsync migrate` only migrates, `rowsync healthcheck`
//! probes a running instance. Settings come from the environment (after `.env` is loaded); flags
//! with the same names override them.

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Settings;

/// rowsync keeps a PostgreSQL table in step with Kafka topics, steered by a REST API.
#[derive(Debug, Parser)]
#[command(name = "rowsync", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

/// What the process does; serving is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve the API and run the workers (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Probe the API on this machine: exit 0 if `GET /health/live` answers 200 within 2 s, else 1.
    ///
    /// Asks 127.0.0.1 (or `::1`, or LISTEN_ADDR's own address when it names one) at the port of
    /// LISTEN_ADDR. Reads no other setting, so it works in an image with nothing but the binary.
    Healthcheck,
}

impl Cli {
    /// Parses `args` (and the environment); a bad or missing setting becomes one line naming it.
    ///
    /// `--help` and `--version` come back as `Err` with clap's full text, to be printed as is.
    /// For `healthcheck`, every setting but `LISTEN_ADDR` keeps its default and the environment
    /// is not read for it, so a probe needs no database or Kafka settings.
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let healthcheck = asks_for_healthcheck(&args);
        let command = if healthcheck {
            healthcheck_command()
        } else {
            Self::command()
        };
        command
            .try_get_matches_from(args)
            .and_then(|matches| Self::from_arg_matches(&matches))
            .map_err(|error| {
                use clap::error::ErrorKind;
                match error.kind() {
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                        CliError::Info(error.to_string())
                    }
                    _ if healthcheck => {
                        CliError::InvalidHealthcheck(one_line(&error.render().to_string()))
                    }
                    _ => CliError::Invalid(one_line(&error.render().to_string())),
                }
            })
    }
}

/// Whether `args` name the `healthcheck` subcommand, found by a parse that tolerates missing or
/// malformed settings (the real parse reports those).
fn asks_for_healthcheck(args: &[OsString]) -> bool {
    Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(args)
        .is_ok_and(|matches| matches.subcommand_name() == Some("healthcheck"))
}

/// The command line as `healthcheck` sees it: no setting is required and only `LISTEN_ADDR` is
/// read from the environment, so neither a missing nor a malformed database or Kafka variable
/// can fail the probe.
fn healthcheck_command() -> clap::Command {
    Cli::command()
        .subcommand_negates_reqs(true)
        .mut_args(|arg| {
            if arg.get_id() == "listen_addr" {
                arg
            } else {
                arg.env(None)
            }
        })
}

/// Why the command line could not become a [`Cli`].
#[derive(Debug)]
pub enum CliError {
    /// Help or version text the user asked for.
    Info(String),
    /// A setting is missing or malformed; the text is one line naming it.
    Invalid(String),
    /// Like [`CliError::Invalid`], for `healthcheck`, which must exit 1 (Docker reserves 2).
    InvalidHealthcheck(String),
}

/// Clap's message up to its first blank line (the usage hint follows), folded onto one line.
fn one_line(rendered: &str) -> String {
    rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [&str; 3] = ["rowsync", "--database-url", "postgres://u:hunter2@db/x"];

    #[test]
    fn a_malformed_port_is_reported_on_one_line_naming_the_variable() {
        let args = [&BASE[..], &["--kafka-host", "k", "--db-port", "abc"]].concat();
        let CliError::Invalid(message) = Cli::try_parse_args(args).unwrap_err() else {
            panic!("expected an invalid-setting error");
        };
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("DB_PORT"), "{message}");
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let args = [
            &BASE[..],
            &[
                "--kafka-host",
                "k",
                "--postgres-password",
                "s3cret-pw",
                "migrate",
            ],
        ]
        .concat();
        let cli = Cli::try_parse_args(args).expect("valid arguments");
        assert_eq!(cli.command, Some(Command::Migrate));
        let debug = format!("{cli:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("s3cret-pw"), "{debug}");
    }

    #[test]
    fn healthcheck_needs_no_database_or_kafka_settings() {
        let cli = Cli::try_parse_args(["rowsync", "--listen-addr", "0.0.0.0:8123", "healthcheck"])
            .expect("valid arguments");
        assert_eq!(cli.command, Some(Command::Healthcheck));
        assert_eq!(cli.settings.listen_addr.port(), 8123);
    }

    #[test]
    fn healthcheck_reports_a_malformed_listen_addr_on_one_line_naming_it() {
        let args = ["rowsync", "--listen-addr", "nowhere", "healthcheck"];
        let CliError::InvalidHealthcheck(message) = Cli::try_parse_args(args).unwrap_err() else {
            panic!("expected an invalid-healthcheck error");
        };
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("LISTEN_ADDR"), "{message}");
    }

    #[test]
    fn kafka_bootstrap_servers_override_host_and_port() {
        let args = [&BASE[..], &["--kafka-bootstrap-servers", "a:1,b:2"]].concat();
        let cli = Cli::try_parse_args(args).expect("valid arguments");
        assert_eq!(cli.settings.kafka.bootstrap_servers(), ["a:1", "b:2"]);
    }
}
