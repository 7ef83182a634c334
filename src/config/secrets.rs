//! Secrets among the settings: tokens and passwords given directly, or read from a file (the
//! Docker and Kubernetes secrets convention, `*_FILE`). Which setting takes which parser is the
//! setting's own file's.

use secrecy::{ExposeSecret, SecretString};

/// A token must be non-empty: an empty `API_TOKEN=` would otherwise lock nothing while looking set.
pub(super) fn parse_token(value: &str) -> Result<SecretString, String> {
    if value.trim().is_empty() {
        return Err("must not be empty (unset it to leave the API open)".to_owned());
    }
    parse_secret(value)
}

/// `API_TOKEN_FILE`: [`parse_secret_file`], and like `API_TOKEN` never blank.
pub(super) fn parse_token_file(path: &str) -> Result<SecretString, String> {
    let token = parse_secret_file(path)?;
    if token.expose_secret().trim().is_empty() {
        return Err(format!("{path} holds only whitespace"));
    }
    Ok(token)
}

pub(super) fn parse_secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.to_owned()))
}

/// A secret read from a file (the Docker and Kubernetes secrets convention, `*_FILE`): its
/// contents with one trailing newline trimmed. Errors name the file, never its contents.
pub fn parse_secret_file(path: &str) -> Result<SecretString, String> {
    let contents = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let secret = contents
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&contents);
    if secret.is_empty() {
        return Err(format!("{path} is empty"));
    }
    Ok(SecretString::from(secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::test_support::{database, invalid, parse, URL};

    /// A file under the temp dir holding `contents`, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("rowsync-config-test-{}-{n}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn a_secret_file_loses_exactly_one_trailing_newline() {
        for (contents, secret) in [
            ("hunter2\n", "hunter2"),
            ("hunter2\r\n", "hunter2"),
            ("hunter2", "hunter2"),
            ("hunter2\n\n", "hunter2\n"),
            (" hunter2 \n", " hunter2 "),
        ] {
            let file = TempFile::new(contents);
            assert_eq!(
                parse_secret_file(file.path()).unwrap().expose_secret(),
                secret,
                "{contents:?}"
            );
        }
        let empty = TempFile::new("\n");
        assert!(parse_secret_file(empty.path()).is_err());
    }

    #[test]
    fn postgres_password_file_supplies_the_password() {
        let file = TempFile::new("s3cret-pw\n");
        let args = [
            "--db-host",
            "db",
            "--db-name",
            "x",
            "--postgres-user",
            "u",
            "--postgres-password-file",
            file.path(),
        ];
        let settings = database(&args);
        assert_eq!(settings.password().unwrap().expose_secret(), "s3cret-pw");
        let pg = settings.pg_config().unwrap();
        assert_eq!(pg.config.get_password(), Some(&b"s3cret-pw"[..]));
        assert!(!format!("{settings:?}").contains("s3cret-pw"));
    }

    #[test]
    fn a_password_file_fills_in_a_url_without_password_but_never_overrides_one() {
        let file = TempFile::new("from-file\n");
        let without = database(&[
            URL,
            "postgres://u@db/x",
            "--postgres-password-file",
            file.path(),
        ]);
        let pg = without.pg_config().unwrap();
        assert_eq!(pg.config.get_password(), Some(&b"from-file"[..]));
        let with = database(&[
            URL,
            "postgres://u:in-url@db/x",
            "--postgres-password-file",
            file.path(),
        ]);
        let pg = with.pg_config().unwrap();
        assert_eq!(pg.config.get_password(), Some(&b"in-url"[..]));
    }

    #[test]
    fn a_password_and_its_file_together_are_one_line_naming_both() {
        let file = TempFile::new("pw\n");
        let line = invalid(&[
            URL,
            "postgres://u@db/x",
            "--postgres-password",
            "hunter2",
            "--postgres-password-file",
            file.path(),
        ]);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("POSTGRES_PASSWORD_FILE"), "{line}");
        assert!(
            line.replace("POSTGRES_PASSWORD_FILE", "")
                .contains("POSTGRES_PASSWORD"),
            "{line}"
        );
        assert!(!line.contains("hunter2"), "{line}");
    }

    #[test]
    fn api_token_file_is_the_token_and_conflicts_with_api_token() {
        let file = TempFile::new("token-from-file\n");
        let cli = parse(&[URL, "postgres://u@db/x", "--api-token-file", file.path()]).unwrap();
        assert_eq!(
            cli.settings.auth.token().unwrap().expose_secret(),
            "token-from-file"
        );
        let line = invalid(&[
            URL,
            "postgres://u@db/x",
            "--api-token",
            "t",
            "--api-token-file",
            file.path(),
        ]);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("API_TOKEN_FILE"), "{line}");
        assert!(
            line.replace("API_TOKEN_FILE", "").contains("API_TOKEN"),
            "{line}"
        );
    }

    #[test]
    fn a_blank_token_file_or_a_missing_one_is_one_line_naming_it() {
        let blank = TempFile::new("  \n");
        let line = invalid(&[URL, "postgres://u@db/x", "--api-token-file", blank.path()]);
        assert!(line.contains("API_TOKEN_FILE"), "{line}");
        let line = invalid(&[
            URL,
            "postgres://u@db/x",
            "--postgres-password-file",
            "/nonexistent/rowsync-pw",
        ]);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("POSTGRES_PASSWORD_FILE"), "{line}");
        assert!(line.contains("/nonexistent/rowsync-pw"), "{line}");
    }
}
