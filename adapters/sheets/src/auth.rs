//! Service-account auth: the key file, the signed JWT traded for an access
//! token, and the cached token. Neither the key nor the token is ever
//! logged or put in an error.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use chittysync::AdapterError;
use chittysync_http::Retries;

use crate::client::{error_reason, transport_reason};
use crate::{SYSTEM, SheetsAdapter};

const SCOPES: &str = "https://www.googleapis.com/auth/spreadsheets https://www.googleapis.com/auth/drive.metadata.readonly";

/// The parts of a service-account key file the adapter uses.
#[derive(Deserialize)]
struct KeyFileJson {
    client_email: String,
    private_key: String,
    token_uri: String,
    #[serde(default)]
    private_key_id: Option<String>,
}

pub(crate) struct ServiceAccount {
    pub(crate) client_email: String,
    token_uri: String,
    key_id: Option<String>,
    key: jsonwebtoken::EncodingKey,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

/// Reads a service-account key file. Errors name the file and what to fix,
/// never its content.
pub(crate) fn load_key(path: &Path) -> Result<ServiceAccount, AdapterError> {
    let shown = path.display();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| AdapterError::Config(format!("cannot read the key file {shown}: {e}")))?;
        if meta.permissions().mode() & 0o044 != 0 {
            return Err(AdapterError::Config(format!(
                "the key file {shown} is readable by group or others; restrict it (chmod 600) and run again"
            )));
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| AdapterError::Config(format!("cannot read the key file {shown}: {e}")))?;
    // serde's messages may quote the input: say only where it failed.
    let parsed: KeyFileJson = serde_json::from_str(&text).map_err(|e| {
        AdapterError::Config(format!(
            "the key file {shown} is not a service-account key (JSON with client_email, private_key and token_uri; it fails at line {}, column {}); download a new key for the service account",
            e.line(),
            e.column()
        ))
    })?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(parsed.private_key.as_bytes()).map_err(|_| {
        AdapterError::Config(format!(
            "the private_key of the key file {shown} is not an RSA key in PEM form; download a new key for the service account"
        ))
    })?;
    Ok(ServiceAccount {
        client_email: parsed.client_email,
        token_uri: parsed.token_uri,
        key_id: parsed.private_key_id,
        key,
    })
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

pub(crate) struct AccessToken {
    /// The bearer token (never logged).
    secret: String,
    /// When to get a new one.
    refresh_at: Instant,
}

/// When a token valid for `lifetime` should be replaced: five minutes
/// early, or halfway through when it lives less than ten minutes.
fn refresh_after(lifetime: Duration) -> Duration {
    let margin = Duration::from_secs(300).min(lifetime / 2);
    lifetime - margin
}

/// What to do when the token endpoint refuses the key.
pub(crate) fn token_advice(reason: &str) -> &'static str {
    if reason.contains("invalid_grant") {
        // Google answers invalid_grant to a JWT whose iat/exp are off, too.
        "check the key file is current and the account is enabled, and that this machine's clock is right (the token request carries the current time, and is refused when the clock is off by minutes)"
    } else {
        "check the key file is current and the account is enabled"
    }
}

impl SheetsAdapter {
    pub(crate) async fn access_token(&self) -> Result<String, AdapterError> {
        let mut cache = self.token.lock().await;
        if let Some(t) = cache.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.secret.clone());
        }
        let fresh = self.new_token().await?;
        let secret = fresh.secret.clone();
        *cache = Some(fresh);
        Ok(secret)
    }

    pub(crate) async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    async fn new_token(&self) -> Result<AccessToken, AdapterError> {
        let connect = |reason: String| AdapterError::Connect {
            system: SYSTEM.into(),
            reason,
        };
        // 429, 5xx and lost answers are retried (asking again is harmless),
        // without regard to Retry-After.
        let policy = self.retry_policy();
        let mut retries = Retries::new(&policy, "sheets: get an access token");
        loop {
            let iat = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let claims = Claims {
                iss: &self.account.client_email,
                scope: SCOPES,
                aud: &self.account.token_uri,
                iat,
                exp: iat + 3600,
            };
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            header.kid = self.account.key_id.clone();
            let assertion = jsonwebtoken::encode(&header, &claims, &self.account.key)
                .map_err(|_| connect("cannot sign the token request with the key file's private key; download a new key".into()))?;
            let sent = self
                .http
                .post(&self.account.token_uri)
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ])
                .send()
                .await;
            let retry = match sent {
                Ok(resp) if resp.status().is_success() => {
                    #[derive(Deserialize)]
                    struct TokenResponse {
                        access_token: String,
                        #[serde(default)]
                        expires_in: Option<u64>,
                    }
                    let body: TokenResponse = resp.json().await.map_err(|_| {
                        connect(format!(
                            "the token endpoint {} answered without an access token",
                            self.account.token_uri
                        ))
                    })?;
                    let lifetime = Duration::from_secs(body.expires_in.unwrap_or(3600));
                    return Ok(AccessToken {
                        secret: body.access_token,
                        refresh_at: Instant::now() + refresh_after(lifetime),
                    });
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                        error_reason(status, &text)
                    } else {
                        let reason = error_reason(status, &text);
                        return Err(connect(format!(
                            "the token endpoint {} refused the service account {}: {reason}; {}",
                            self.account.token_uri,
                            self.account.client_email,
                            token_advice(&reason)
                        )));
                    }
                }
                Err(e) => transport_reason(&e),
            };
            if !retries.wait(&retry, None).await {
                return Err(connect(format!(
                    "no access token from {} after {} attempts: {retry}",
                    self.account.token_uri,
                    retries.attempts()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_before_they_expire() {
        assert_eq!(
            refresh_after(Duration::from_secs(3599)),
            Duration::from_secs(3299)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
    }

    #[cfg(unix)]
    #[test]
    fn key_files_readable_by_others_are_refused_without_showing_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        std::fs::write(
            &path,
            r#"{"client_email":"a@b","private_key":"SECRET-MATERIAL","token_uri":"http://x"}"#,
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_key(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_key(&path).unwrap_err().to_string();
        assert!(
            err.contains("not an RSA key") && !err.contains("SECRET"),
            "{err}"
        );
        std::fs::write(&path, r#"{"client_email":"a@b","private_key":7}"#).unwrap();
        let err = load_key(&path).unwrap_err().to_string();
        assert!(err.contains("line 1") && !err.contains("a@b"), "{err}");
    }
}
