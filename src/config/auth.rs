//! Who may call the API: `API_TOKEN` (or `API_TOKEN_FILE`) and whether reads need it too.

use secrecy::SecretString;

use super::secrets::{parse_token, parse_token_file};

/// Who may call the API.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthSettings {
    /// Bearer token required by every request that changes state (start, stop, reset,
    /// write_to_kafka); unset, the API is open (a warning is logged at start-up). Never logged.
    #[arg(long, env = "API_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub api_token: Option<SecretString>,
    /// File holding the token (Docker and Kubernetes secrets), one trailing newline trimmed;
    /// instead of `API_TOKEN`, never with it.
    #[arg(long, env = "API_TOKEN_FILE", value_parser = parse_token_file, conflicts_with = "api_token")]
    pub api_token_file: Option<SecretString>,
    /// Require the token for reads too (listing rows and workers).
    #[arg(long, env = "API_TOKEN_FOR_READS", default_value_t = false, action = clap::ArgAction::Set)]
    pub api_token_for_reads: bool,
}

impl AuthSettings {
    /// The token from `API_TOKEN` or `API_TOKEN_FILE` (never both).
    pub fn token(&self) -> Option<&SecretString> {
        self.api_token.as_ref().or(self.api_token_file.as_ref())
    }
}
