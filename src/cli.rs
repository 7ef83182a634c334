//! The command line: `rowsync` serves, `rowsync migrate` only migrates.
//! Settings come from the environment (after `.env` is loaded); flags with the same names override them.

use clap::{Parser, Subcommand};

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
}

impl Cli {
    /// Parses `args` (and the environment); a bad or missing setting becomes one line naming it.
    ///
    /// `--help` and `--version` come back as `Err` with clap's full text, to be printed as is.
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args).map_err(|error| {
            use clap::error::ErrorKind;
            match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    CliError::Info(error.to_string())
                }
                _ => CliError::Invalid(one_line(&error.render().to_string())),
            }
        })
    }
}

/// Why the command line could not become a [`Cli`].
#[derive(Debug)]
pub enum CliError {
    /// Help or version text the user asked for.
    Info(String),
    /// A setting is missing or malformed; the text is one line naming it.
    Invalid(String),
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
    fn kafka_bootstrap_servers_override_host_and_port() {
        let args = [&BASE[..], &["--kafka-bootstrap-servers", "a:1,b:2"]].concat();
        let cli = Cli::try_parse_args(args).expect("valid arguments");
        assert_eq!(cli.settings.kafka.bootstrap_servers(), ["a:1", "b:2"]);
    }
}
