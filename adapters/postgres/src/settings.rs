//! Connection strings: libpq's URL and `key=value` forms, with the TLS
//! settings tokio-postgres does not read (`sslmode`'s `verify-ca` and
//! `verify-full`, `sslrootcert`) taken out first. No error here quotes the
//! connection string: it may hold a password.

use std::path::PathBuf;

use tokio_postgres::Config;

use crate::tls::{Roots, SslMode, TlsSettings};

/// A connection string as a tokio-postgres configuration and its TLS
/// settings. `Err` says what is wrong without quoting the string.
pub(crate) fn parse(connection: &str) -> Result<(Config, TlsSettings), String> {
    let trimmed = connection.trim_start();
    let is_url = trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://");
    let (rest, tls) = if is_url {
        split_url(trimmed)?
    } else {
        split_pairs(trimmed)?
    };
    let config: Config = rest.parse().map_err(|_| {
        if is_url {
            "it is not a valid postgres:// URL (postgres://user@host:port/db?sslmode=…)".to_owned()
        } else {
            "it is neither a postgres:// URL nor valid key=value pairs (host=… dbname=… sslmode=…)"
                .to_owned()
        }
    })?;
    Ok((config, tls))
}

/// Applies one TLS setting; `false` if `key` is not one.
fn take(tls: &mut Tls, key: &str, value: String) -> Result<bool, String> {
    match key {
        "sslmode" => {
            tls.mode = Some(SslMode::parse(&value).ok_or_else(|| {
                format!(
                    "sslmode '{}' is not one of disable, prefer, require, verify-ca, verify-full",
                    value.chars().take(20).collect::<String>()
                )
            })?);
        }
        "sslrootcert" => tls.root = Some(value),
        _ => return Ok(false),
    }
    Ok(true)
}

#[derive(Default)]
struct Tls {
    mode: Option<SslMode>,
    root: Option<String>,
}

impl Tls {
    /// libpq's defaults: `prefer`; with `sslrootcert=system`, `verify-full`.
    fn settings(self) -> TlsSettings {
        let (roots, system) = match self.root.as_deref() {
            None | Some("") => (Roots::System, false),
            Some("system") => (Roots::System, true),
            Some(path) => (Roots::File(PathBuf::from(path)), false),
        };
        let mode = self.mode.unwrap_or(if system {
            SslMode::VerifyFull
        } else {
            SslMode::Prefer
        });
        TlsSettings { mode, roots }
    }
}

/// A URL without its TLS query parameters, and those.
fn split_url(url: &str) -> Result<(String, TlsSettings), String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut tls = Tls::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        if !take(&mut tls, &key, percent_decode(value)?)? {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls.settings()))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a query parameter of the URL has a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a query parameter of the URL is not UTF-8".to_owned())
}

/// `key=value` pairs without the TLS ones (re-quoted), and those.
fn split_pairs(s: &str) -> Result<(String, TlsSettings), String> {
    let mut tls = Tls::default();
    let mut kept = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err("it is neither a postgres:// URL nor valid key=value pairs".into());
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err("a quoted value in the connection string is not closed".into());
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if !take(&mut tls, &key, value.clone())? {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), tls.settings()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_taken_out_of_urls_and_pairs() {
        let (config, tls) =
            parse("postgres://me:pw@db.example:6432/app?sslmode=verify-full&sslrootcert=%2Fca.pem&application_name=x")
                .unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.roots, Roots::File("/ca.pem".into()));
        assert_eq!(config.get_application_name(), Some("x"));
        assert_eq!(config.get_password(), Some(&b"pw"[..]));

        let (config, tls) = parse(
            "host=db.example user=me password='it\\'s' sslmode=verify-ca sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
        assert_eq!(config.get_user(), Some("me"));

        let (_, tls) = parse("postgres://me@db/app").unwrap();
        assert_eq!(tls, TlsSettings::default(), "prefer, system roots");
        let (_, tls) = parse("postgres://me@db/app?sslrootcert=system").unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull, "as libpq");
    }

    #[test]
    fn errors_never_quote_the_connection_string() {
        for bad in [
            "postgres://me:hunter2@db/app?sslmode=sometimes",
            "postgres://me:hunter2@db:notaport/app",
            "host=db password=hunter2 nonsense",
            "host=db password='hunter2",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
