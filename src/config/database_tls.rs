//! TLS to PostgreSQL as libpq names it: the `sslmode` ([`SslMode`]), the certificate files
//! ([`PgTlsSettings`]), and taking libpq's TLS parameters out of a connection string, which
//! tokio-postgres does not know. Building the connector is `db::tls`'s.

use std::path::PathBuf;

/// TLS to PostgreSQL, as libpq's `sslmode` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, plaintext otherwise (libpq's default).
    #[default]
    Prefer,
    /// TLS or nothing; the certificate is checked only against an explicit root certificate.
    Require,
    /// TLS, and the server's certificate chains to a trusted root (any host name).
    VerifyCa,
    /// TLS, the chain is trusted and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The name libpq gives this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    pub(super) fn from_libpq(value: &str) -> Option<Self> {
        [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ]
        .into_iter()
        .find(|mode| mode.as_str() == value)
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file named by a setting, with the setting's name for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingPath {
    pub path: PathBuf,
    /// `DB_SSLROOTCERT`, or `sslrootcert in DATABASE_URL`, …
    pub setting: &'static str,
}

/// How rowsync secures its PostgreSQL connections: the mode and the files it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTlsSettings {
    pub mode: SslMode,
    /// Trusted roots; `None`: Mozilla's (for verify-*) or no check (prefer, require).
    pub root_cert: Option<SettingPath>,
    pub client_cert: Option<SettingPath>,
    pub client_key: Option<SettingPath>,
}

/// The TLS parameters of a connection string, which tokio-postgres does not know (it knows
/// only `sslmode` disable/prefer/require).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct TlsParams {
    pub(super) sslmode: Option<String>,
    pub(super) sslrootcert: Option<String>,
    pub(super) sslcert: Option<String>,
    pub(super) sslkey: Option<String>,
}

impl TlsParams {
    /// Takes `value` when `key` is a TLS parameter; `false` for any other key.
    fn take(&mut self, key: &str, value: String) -> bool {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

/// Splits the TLS parameters off a connection string, in either of libpq's forms (URL or
/// `key=value` pairs); the rest goes to tokio-postgres. Errors never quote the string.
pub(super) fn split_tls_params(connection: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    let url_rest = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|prefix| connection.strip_prefix(prefix));
    let Some(rest) = url_rest else {
        return split_key_value_tls_params(connection);
    };
    // Where tokio-postgres's URL parser finds the query: after the credentials (up to the
    // first '@'), at the first '?'.
    let after_credentials = rest.find('@').map_or(0, |at| at + 1);
    let Some(query_at) = rest[after_credentials..]
        .find('?')
        .map(|q| connection.len() - rest.len() + after_credentials + q)
    else {
        return Ok((connection.to_owned(), params));
    };
    let mut kept = Vec::new();
    for pair in connection[query_at + 1..].split('&') {
        let taken = match pair.split_once('=') {
            Some((key, value)) => params.take(&percent_decode(key)?, percent_decode(value)?),
            None => false,
        };
        if !taken {
            kept.push(pair);
        }
    }
    let mut rest = connection[..query_at].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, params))
}

/// [`split_tls_params`] for `host=… sslmode=…` strings, read as tokio-postgres reads them.
fn split_key_value_tls_params(connection: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    let mut chars = connection.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err("a keyword without `=`".to_owned());
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err("an unterminated quoted value".to_owned()),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if !params.take(&key, value.clone()) {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), params))
}

/// `%XX` escapes decoded, as in a URL's query.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a malformed %-escape in a parameter")?;
            decoded.push(hex);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "a parameter that is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_mark_in_the_password_does_not_start_the_query() {
        let (rest, params) =
            split_tls_params("postgres://u:p?w@db/x?sslmode=require&connect_timeout=3").unwrap();
        assert_eq!(rest, "postgres://u:p?w@db/x?connect_timeout=3");
        assert_eq!(params.sslmode.as_deref(), Some("require"));
        let (rest, params) = split_tls_params("postgresql://db/x?sslmode=disable").unwrap();
        assert_eq!(rest, "postgresql://db/x");
        assert_eq!(params.sslmode.as_deref(), Some("disable"));
    }
}
