//! The OAuth token endpoint for service accounts (the JWT-bearer grant), as
//! Google's `oauth2.googleapis.com/token` serves it, and the access tokens it
//! issues.

use std::collections::BTreeMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

/// The test key pair's private half (PKCS#8 PEM), handed out in key files.
pub(crate) const PRIVATE_KEY_PEM: &str =
    include_str!("../../testdata/sheets_service_account_private.pem");
/// Its public half, which verifies assertions.
const PUBLIC_KEY_PEM: &str = include_str!("../../testdata/sheets_service_account_public.pem");

/// Scopes that allow Sheets reads (any one suffices), per the API
/// reference's "Authorization scopes" for `spreadsheets.get` and
/// `spreadsheets.values.get`.
pub(crate) const READ_SCOPES: [&str; 5] = [
    "https://www.googleapis.com/auth/spreadsheets",
    "https://www.googleapis.com/auth/spreadsheets.readonly",
    "https://www.googleapis.com/auth/drive",
    "https://www.googleapis.com/auth/drive.readonly",
    "https://www.googleapis.com/auth/drive.file",
];
/// Scopes that allow Sheets writes (`values.update`, `append`, `clear`,
/// `batchUpdate`, `batchClear`, `spreadsheets.batchUpdate`).
pub(crate) const WRITE_SCOPES: [&str; 3] = [
    "https://www.googleapis.com/auth/spreadsheets",
    "https://www.googleapis.com/auth/drive",
    "https://www.googleapis.com/auth/drive.file",
];
/// The audience Google documents for service-account assertions ("Using
/// OAuth 2.0 for Server to Server Applications": `aud` is always this
/// value). Google's own auth libraries send it whatever `token_uri` says.
pub(crate) const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The JWT-bearer grant type.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Longest assertion Google accepts (`exp - iat`), seconds.
const MAX_ASSERTION_SECS: i64 = 3600;
/// Clock skew tolerated on `iat` and `exp`, seconds.
const SKEW_SECS: i64 = 300;

/// An issued access token: whose, which scopes, until when.
#[derive(Clone)]
pub(crate) struct Grant {
    pub(crate) email: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) expires_ms: i64,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    #[serde(default)]
    scope: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// An OAuth error answer: `{error, error_description}` with status 400.
pub(crate) struct OAuthError {
    pub(crate) error: &'static str,
    pub(crate) description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            error,
            description: description.into(),
        }
    }

    pub(crate) fn body(&self) -> Value {
        json!({ "error": self.error, "error_description": self.description })
    }
}

/// Checks a token request's form fields and its assertion. `accounts` maps
/// known client emails to the `token_uri` their key file names; `host_uri`
/// is this endpoint's own address as the request reached it. The audience
/// may be either of those or Google's documented one. Returns the
/// account email and the scopes asked for.
pub(crate) fn verify_assertion(
    form: &BTreeMap<String, String>,
    accounts: &BTreeMap<String, String>,
    host_uri: &str,
    now_ms: i64,
) -> Result<(String, Vec<String>), OAuthError> {
    let grant_type = form.get("grant_type").map(String::as_str).unwrap_or("");
    if grant_type != JWT_BEARER {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            format!("Invalid grant_type: {grant_type}"),
        ));
    }
    let Some(assertion) = form.get("assertion") else {
        return Err(OAuthError::new(
            "invalid_request",
            "Missing required parameter: assertion",
        ));
    };
    let key = DecodingKey::from_rsa_pem(PUBLIC_KEY_PEM.as_bytes()).map_err(|_| {
        OAuthError::new("internal_failure", "The emulator's test key is unreadable.")
    })?;
    let mut validation = Validation::new(Algorithm::RS256);
    // Time and audience are checked below, by the emulator's clock.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<Claims>(assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind;
            let description = match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    "Invalid JWT Signature."
                }
                _ => {
                    "Invalid JWT: the assertion is not a well-formed RS256 JWT with iss, scope, aud, iat and exp."
                }
            };
            return Err(OAuthError::new("invalid_grant", description));
        }
    };
    let Some(token_uri) = accounts.get(&claims.iss.to_ascii_lowercase()) else {
        return Err(OAuthError::new(
            "invalid_grant",
            "Invalid grant: account not found",
        ));
    };
    if claims.aud != *token_uri && claims.aud != host_uri && claims.aud != GOOGLE_TOKEN_URI {
        return Err(OAuthError::new(
            "invalid_grant",
            format!("Invalid JWT: Failed audience check. The right audience is {token_uri}"),
        ));
    }
    let now = now_ms.div_euclid(1000);
    let timely = claims.exp > claims.iat
        && claims.exp - claims.iat <= MAX_ASSERTION_SECS
        && claims.iat <= now + SKEW_SECS
        && claims.exp >= now - SKEW_SECS;
    if !timely {
        return Err(OAuthError::new(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    let scopes: Vec<String> = claims.scope.split_whitespace().map(str::to_owned).collect();
    // Google issues a token for any scope set; the API then refuses calls
    // the scopes do not cover (403). Only an empty scope is refused here.
    if scopes.is_empty() {
        return Err(OAuthError::new(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ));
    }
    Ok((claims.iss.to_ascii_lowercase(), scopes))
}
