//! [`DatabaseUrl`]: where the database is, printed with its password hidden.

use std::path::Path;

/// A database URL (`sqlite://…` or `postgres://…`). `Debug` and [`DatabaseUrl::redacted`]
/// hide the password, so a configuration printed or logged leaks no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Checks the scheme: `sqlite:` or `postgres:`/`postgresql:`.
    ///
    /// # Errors
    ///
    /// A message (with the password hidden) for another scheme.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = Self(url.trim().to_owned());
        if url.is_sqlite() || url.is_postgres() {
            Ok(url)
        } else {
            Err(format!(
                "DATABASE_URL={} is neither sqlite://… nor postgres://…",
                url.redacted()
            ))
        }
    }

    /// The embedded SQLite database `file`, created if missing.
    pub fn sqlite_file(file: &Path) -> Self {
        let mut encoded = String::from("sqlite://");
        for c in file.to_string_lossy().chars() {
            match c {
                '%' | '?' | '#' | ' ' => encoded.push_str(&format!("%{:02X}", c as u32)),
                c => encoded.push(c),
            }
        }
        encoded.push_str("?mode=rwc");
        Self(encoded)
    }

    /// Whether it names a SQLite database.
    pub fn is_sqlite(&self) -> bool {
        self.0.starts_with("sqlite:")
    }

    /// Whether it names a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }

    /// The URL itself, for connecting. Never log it: log [`DatabaseUrl::redacted`].
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password (user info or `password=` parameter) replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(start) = url.find("://").map(|i| i + 3) else {
            return url.clone();
        };
        let authority_end = url[start..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| start + i);
        let mut out = String::with_capacity(url.len());
        out.push_str(&url[..start]);
        let authority = &url[start..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let user_info = &authority[..at];
                match user_info.find(':') {
                    Some(colon) => {
                        out.push_str(&user_info[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(user_info),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        let rest = &url[authority_end..];
        match rest.split_once('?') {
            Some((path, query)) => {
                out.push_str(path);
                out.push('?');
                let params: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                            format!("{key}=***")
                        }
                        _ => pair.to_owned(),
                    })
                    .collect();
                out.push_str(&params.join("&"));
            }
            None => out.push_str(rest),
        }
        out
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&self.redacted())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_wherever_they_are() {
        let url = DatabaseUrl::parse(
            "postgres://app:s3cr%40t@db.example.org:5432/sc?sslmode=require&password=other",
        )
        .unwrap();
        let shown = url.redacted();
        assert_eq!(
            shown,
            "postgres://app:***@db.example.org:5432/sc?sslmode=require&password=***"
        );
        assert!(!format!("{url:?}").contains("s3cr"));
        assert!(!format!("{url:?}").contains("other"));
        assert_eq!(
            DatabaseUrl::parse("postgres://app@h/sc")
                .unwrap()
                .redacted(),
            "postgres://app@h/sc"
        );
    }

    #[test]
    fn other_schemes_are_refused_without_showing_the_password() {
        let e = DatabaseUrl::parse("mysql://root:hunter2@h/db").unwrap_err();
        assert!(e.contains("mysql://root:***@h/db"), "{e}");
        assert!(!e.contains("hunter2"));
    }

    #[test]
    fn a_sqlite_path_is_encoded() {
        let url = DatabaseUrl::sqlite_file(Path::new("/tmp/a b/x%.db"));
        assert_eq!(url.expose(), "sqlite:///tmp/a%20b/x%25.db?mode=rwc");
        assert!(url.is_sqlite());
    }
}
