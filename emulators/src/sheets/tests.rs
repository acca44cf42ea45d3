//! The emulator over real HTTP, as an adapter would use it.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use super::Sheets;
use crate::{Fault, Running};

const EMAIL: &str = "sync@chittysync-emulator.iam.gserviceaccount.com";
const OTHER_EMAIL: &str = "other@chittysync-emulator.iam.gserviceaccount.com";
const SCOPES: &str = "https://www.googleapis.com/auth/spreadsheets https://www.googleapis.com/auth/drive.metadata.readonly";
const UNKNOWN_KEY: &str = include_str!("../../testdata/unknown_signer_private.pem");
/// 2027-01-15, a fixed emulator time.
const START_MS: i64 = 1_800_000_000_000;

struct Harness {
    sheets: Sheets,
    _running: Running,
    base: String,
    client: reqwest::Client,
    token: String,
    id: String,
}

fn assertion(pem: &str, iss: &str, aud: &str, scope: &str, iat: i64, exp: i64) -> String {
    let claims = json!({ "iss": iss, "scope": scope, "aud": aud, "iat": iat, "exp": exp });
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("test key");
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).expect("sign")
}

impl Harness {
    async fn new() -> Harness {
        let sheets = Sheets::new();
        sheets.control().set_time(START_MS);
        let running = sheets.start().await.expect("start");
        let base = running.base_url();
        let client = reqwest::Client::new();
        let id = sheets.create_spreadsheet(&["Sheet1", "My Sheet"], &[EMAIL]);
        let mut h = Harness {
            sheets,
            _running: running,
            base,
            client,
            token: String::new(),
            id,
        };
        h.token = h.token_for(EMAIL, SCOPES).await;
        h
    }

    fn now_s(&self) -> i64 {
        self.sheets.control().now_ms() / 1000
    }

    async fn token_request(&self, assertion: &str) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/token", self.base))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion),
            ])
            .send()
            .await
            .expect("token request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("token json"))
    }

    async fn token_for(&self, email: &str, scopes: &str) -> String {
        let key = self.sheets.service_account_key(&self.base, email);
        let pem = key["private_key"].as_str().expect("private_key");
        let uri = key["token_uri"].as_str().expect("token_uri");
        let now = self.now_s();
        let (status, body) = self
            .token_request(&assertion(pem, email, uri, scopes, now, now + 3600))
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(&self.token, method, path, body).await
    }

    /// `/v4/spreadsheets/{id}{rest}`
    fn sheet_path(&self, rest: &str) -> String {
        format!("/v4/spreadsheets/{}{rest}", self.id)
    }

    async fn get(&self, rest: &str) -> (u16, Value) {
        self.call(Method::GET, &self.sheet_path(rest), None).await
    }

    async fn post(&self, rest: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, &self.sheet_path(rest), Some(body))
            .await
    }

    async fn put(&self, rest: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, &self.sheet_path(rest), Some(body))
            .await
    }

    async fn drive_version(&self) -> (String, String) {
        let (status, body) = self
            .call(
                Method::GET,
                &format!("/drive/v3/files/{}?fields=modifiedTime,version", self.id),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        (
            body["version"]
                .as_str()
                .expect("version is a string")
                .to_owned(),
            body["modifiedTime"]
                .as_str()
                .expect("modifiedTime")
                .to_owned(),
        )
    }

    async fn row_count(&self, sheet: usize) -> u64 {
        let (_, meta) = self
            .get("?fields=sheets.properties(sheetId,title,gridProperties)")
            .await;
        meta["sheets"][sheet]["properties"]["gridProperties"]["rowCount"]
            .as_u64()
            .expect("rowCount")
    }
}

#[tokio::test]
async fn the_token_endpoint_checks_assertions_like_google() {
    let h = Harness::new().await;
    let key = h.sheets.service_account_key(&h.base, EMAIL);
    assert_eq!(key["type"], "service_account");
    assert_eq!(key["token_uri"], format!("{}/token", h.base));
    let pem = key["private_key"].as_str().expect("pem");
    let uri = key["token_uri"].as_str().expect("uri");
    let now = h.now_s();

    let (status, ok) = h
        .token_request(&assertion(pem, EMAIL, uri, SCOPES, now, now + 3600))
        .await;
    assert_eq!(status, 200);
    assert_eq!(ok["token_type"], "Bearer");
    assert_eq!(ok["expires_in"], 3599);
    assert!(ok["access_token"].as_str().is_some_and(|t| !t.is_empty()));

    let short_lived = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";
    let cases = [
        (
            assertion(UNKNOWN_KEY, EMAIL, uri, SCOPES, now, now + 3600),
            "invalid_grant",
            Some("Invalid JWT Signature."),
        ),
        (
            assertion(
                pem,
                EMAIL,
                "https://accounts.example.com/token",
                SCOPES,
                now,
                now + 3600,
            ),
            "invalid_grant",
            None,
        ),
        (
            assertion(pem, EMAIL, uri, SCOPES, now, now + 3601),
            "invalid_grant",
            Some(short_lived),
        ),
        (
            assertion(pem, EMAIL, uri, SCOPES, now - 7200, now - 3600),
            "invalid_grant",
            Some(short_lived),
        ),
        (
            assertion(pem, "stranger@example.com", uri, SCOPES, now, now + 3600),
            "invalid_grant",
            Some("Invalid grant: account not found"),
        ),
        (
            assertion(pem, EMAIL, uri, "", now, now + 60),
            "invalid_scope",
            None,
        ),
        ("not.a.jwt".to_owned(), "invalid_grant", None),
    ];
    for (jwt, error, description) in cases {
        let (status, body) = h.token_request(&jwt).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], error, "{body}");
        if let Some(d) = description {
            assert_eq!(body["error_description"], d);
        }
    }

    let response = h
        .client
        .post(format!("{}/token", h.base))
        .form(&[("grant_type", "client_credentials"), ("assertion", "x")])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "unsupported_grant_type");
}

/// Google's auth libraries (google-auth for Python, google-auth-library
/// for Node) always send the documented audience, not the key file's
/// `token_uri`: the emulator must take it, or they cannot use it.
#[tokio::test]
async fn the_token_endpoint_accepts_googles_documented_audience() {
    let h = Harness::new().await;
    let key = h.sheets.service_account_key(&h.base, EMAIL);
    let pem = key["private_key"].as_str().expect("pem");
    let now = h.now_s();
    let jwt = assertion(
        pem,
        EMAIL,
        "https://oauth2.googleapis.com/token",
        SCOPES,
        now,
        now + 3600,
    );
    let (status, body) = h.token_request(&jwt).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("access_token");
    let (status, body) = h.call_as(token, Method::GET, &h.sheet_path(""), None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn tokens_expire_by_the_control_clock() {
    let h = Harness::new().await;
    assert_eq!(h.get("").await.0, 200);
    h.sheets.control().advance(Duration::from_secs(3598));
    assert_eq!(h.get("").await.0, 200);
    h.sheets.control().advance(Duration::from_secs(1));
    let (status, body) = h.get("").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(
                "Request had invalid authentication credentials. Expected OAuth 2 access token"
            ))
    );
    let (status, body) = h.call_as("", Method::GET, &h.sheet_path(""), None).await;
    assert_eq!(status, 401, "{body}");
    // A fresh token works again.
    let fresh = h.token_for(EMAIL, SCOPES).await;
    assert_eq!(
        h.call_as(&fresh, Method::GET, &h.sheet_path(""), None)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn unshared_spreadsheets_are_forbidden_and_unknown_ones_missing() {
    let h = Harness::new().await;
    let other = h.token_for(OTHER_EMAIL, SCOPES).await;
    let (status, body) = h
        .call_as(&other, Method::GET, &h.sheet_path("/values/Sheet1"), None)
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    let (status, body) = h
        .call(
            Method::GET,
            "/v4/spreadsheets/no-such-id/values/Sheet1",
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["status"], "NOT_FOUND");
    // Drive hides files the caller cannot see.
    let (status, _) = h
        .call_as(
            &other,
            Method::GET,
            &format!("/drive/v3/files/{}?fields=version", h.id),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn metadata_lists_sheets_with_ids_titles_and_sizes() {
    let h = Harness::new().await;
    let (status, meta) = h
        .get("?fields=sheets.properties(sheetId,title,gridProperties)")
        .await;
    assert_eq!(status, 200, "{meta}");
    // Only what the mask asks for.
    assert_eq!(
        meta,
        json!({ "sheets": [
            { "properties": { "sheetId": 0, "title": "Sheet1", "gridProperties": { "rowCount": 1000, "columnCount": 26 } } },
            { "properties": { "sheetId": 1_000_001, "title": "My Sheet", "gridProperties": { "rowCount": 1000, "columnCount": 26 } } }
        ]})
    );
    let (status, full) = h.get("").await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["spreadsheetId"], h.id.as_str());
    let first = &full["sheets"][0]["properties"];
    assert_eq!(first["index"], 0);
    assert_eq!(first["sheetType"], "GRID");
    assert_eq!(full["sheets"][1]["properties"]["index"], 1);

    let (_, props) = h.get("?fields=sheets.properties").await;
    assert_eq!(props["sheets"][1]["properties"]["index"], 1);
    assert!(props.get("spreadsheetId").is_none(), "{props}");
    let (_, id_only) = h.get("?fields=spreadsheetId").await;
    assert_eq!(id_only, json!({ "spreadsheetId": h.id }));
    let (_, title) = h.get("?fields=properties.title").await;
    assert_eq!(
        title,
        json!({ "properties": { "title": "Untitled spreadsheet" } })
    );
    let (_, both) = h
        .get("?fields=spreadsheetId,sheets(properties(title),data.columnMetadata)")
        .await;
    assert_eq!(
        both["sheets"][0]["properties"],
        json!({ "title": "Sheet1" })
    );
    assert_eq!(
        both["sheets"][0]["data"][0]["columnMetadata"]
            .as_array()
            .map(Vec::len),
        Some(26)
    );
    for bad in [
        "sheets.bogus",
        "nosuchfield",
        "sheets(properties",
        "properties.title)",
    ] {
        let (status, body) = h.get(&format!("?fields={bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(
            body["error"]["message"],
            "Request contains an invalid argument."
        );
    }
}

#[tokio::test]
async fn reads_trim_ragged_rows_and_render_as_asked() {
    let h = Harness::new().await;
    h.sheets.set_values(
        &h.id,
        "Sheet1",
        vec![
            vec![json!("_id"), json!("name"), json!("n"), json!("ok")],
            vec![json!("r1"), json!("Ann"), json!(42), json!(true)],
            vec![json!("r2"), json!(""), json!(1.5)],
            vec![],
            vec![json!("r4")],
        ],
    );
    let (status, got) = h.get("/values/Sheet1").await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["range"], "Sheet1!A1:Z1000");
    assert_eq!(got["majorDimension"], "ROWS");
    assert_eq!(
        got["values"],
        json!([
            ["_id", "name", "n", "ok"],
            ["r1", "Ann", "42", "TRUE"],
            ["r2", "", "1.5"],
            [],
            ["r4"]
        ])
    );
    let (_, got) = h
        .get("/values/Sheet1!B2:D3?valueRenderOption=UNFORMATTED_VALUE&dateTimeRenderOption=SERIAL_NUMBER&majorDimension=ROWS")
        .await;
    assert_eq!(got["range"], "Sheet1!B2:D3");
    assert_eq!(got["values"], json!([["Ann", 42, true], ["", 1.5]]));
    let (_, got) = h
        .get("/values/Sheet1!A1:C3?valueRenderOption=UNFORMATTED_VALUE&majorDimension=COLUMNS")
        .await;
    assert_eq!(got["majorDimension"], "COLUMNS");
    assert_eq!(
        got["values"],
        json!([["_id", "r1", "r2"], ["name", "Ann"], ["n", 42, 1.5]])
    );
    // An empty range has no `values` at all.
    let (_, got) = h.get("/values/'My Sheet'!A2:Z").await;
    assert_eq!(got["range"], "'My Sheet'!A2:Z1000");
    assert!(got.get("values").is_none(), "{got}");
    // Ranges are percent-decoded, and a bare A1 range means the first sheet.
    let (_, got) = h
        .get("/values/Sheet1%21A2%3AA?valueRenderOption=UNFORMATTED_VALUE")
        .await;
    assert_eq!(got["values"], json!([["r1"], ["r2"], [], ["r4"]]));
    // Sheet names in ranges ignore case.
    let (_, got) = h.get("/values/sheet1!B2").await;
    assert_eq!(got["range"], "Sheet1!B2");
    let (_, got) = h.get("/values/B2").await;
    assert_eq!(got["values"], json!([["Ann"]]));
    let (_, got) = h
        .get("/values/2:3?valueRenderOption=UNFORMATTED_VALUE")
        .await;
    assert_eq!(got["range"], "Sheet1!A2:Z3");
    assert_eq!(
        got["values"],
        json!([["r1", "Ann", 42, true], ["r2", "", 1.5]])
    );

    for bad in ["Nope!A1", "Sheet1!A0", "'Unclosed!A1", "Sheet1!1A:B"] {
        let (status, body) = h.get(&format!("/values/{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(
            body["error"]["message"],
            format!("Unable to parse range: {bad}")
        );
    }
    let (status, _) = h.get("/values/Sheet1?valueRenderOption=PRETTY").await;
    assert_eq!(status, 400);

    let (status, got) = h
        .get("/values:batchGet?ranges=Sheet1!A1:B2&ranges=%27My%20Sheet%27!A1&valueRenderOption=UNFORMATTED_VALUE")
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["spreadsheetId"], h.id.as_str());
    assert_eq!(
        got["valueRanges"],
        json!([
            { "range": "Sheet1!A1:B2", "majorDimension": "ROWS", "values": [["_id", "name"], ["r1", "Ann"]] },
            { "range": "'My Sheet'!A1", "majorDimension": "ROWS" }
        ])
    );
    assert_eq!(
        h.sheets.values(&h.id, "Sheet1"),
        vec![
            vec![json!("_id"), json!("name"), json!("n"), json!("ok")],
            vec![json!("r1"), json!("Ann"), json!(42), json!(true)],
            vec![json!("r2"), json!(""), json!(1.5)],
            vec![],
            vec![json!("r4")],
        ]
    );
}

#[tokio::test]
async fn updates_store_raw_as_given_and_parse_user_entered() {
    let h = Harness::new().await;
    let values = json!({ "values": [["42", "TRUE", "'7", 3.0], ["x"]] });
    let (status, raw) = h
        .put("/values/Sheet1!A1:D2?valueInputOption=RAW", values.clone())
        .await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(
        raw,
        json!({ "spreadsheetId": h.id, "updatedRange": "Sheet1!A1:D2", "updatedRows": 2, "updatedColumns": 4, "updatedCells": 5 })
    );
    assert_eq!(
        h.sheets.values(&h.id, "Sheet1"),
        vec![
            vec![json!("42"), json!("TRUE"), json!("'7"), json!(3)],
            vec![json!("x")]
        ]
    );
    let (status, _) = h
        .put(
            "/values/'My Sheet'!B2:C2?valueInputOption=USER_ENTERED",
            json!({ "values": [["42", "TRUE", "'7"]] }),
        )
        .await;
    assert_eq!(status, 400, "three values do not fit two cells");
    let (status, typed) = h
        .put(
            "/values/'My Sheet'!B2:D2?valueInputOption=USER_ENTERED",
            json!({ "values": [["42", "TRUE", "'7"]] }),
        )
        .await;
    assert_eq!(status, 200, "{typed}");
    assert_eq!(typed["updatedRange"], "'My Sheet'!B2:D2");
    assert_eq!(
        h.sheets.values(&h.id, "My Sheet"),
        vec![vec![], vec![json!(""), json!(42), json!(true), json!("7")]]
    );
    let (status, _) = h
        .put(
            "/values/Sheet1!A5?valueInputOption=RAW",
            json!({ "range": "sheet1!A5", "values": [["same"]] }),
        )
        .await;
    assert_eq!(status, 200, "the body may repeat the URL's range");
    let (status, _) = h
        .put(
            "/values/Sheet1!A5?valueInputOption=RAW",
            json!({ "range": "Sheet1!A6", "values": [["other"]] }),
        )
        .await;
    assert_eq!(status, 400, "the body's range must match the URL's");
    assert_eq!(h.sheets.values(&h.id, "Sheet1")[4], vec![json!("same")]);
    let (status, body) = h
        .put("/values/Sheet1!A1", json!({ "values": [["x"]] }))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    // A null leaves a cell alone; an empty string clears it.
    let (status, _) = h
        .put(
            "/values/Sheet1!A1:B1?valueInputOption=RAW",
            json!({ "values": [[null, ""]] }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        h.sheets.values(&h.id, "Sheet1")[0],
        vec![json!("42"), json!(""), json!("'7"), json!(3)]
    );

    let (status, batch) = h
        .post(
            "/values:batchUpdate",
            json!({ "valueInputOption": "USER_ENTERED", "data": [
                { "range": "Sheet1!A3", "values": [["1"]] },
                { "range": "'My Sheet'!A1:A2", "majorDimension": "COLUMNS", "values": [["a", "b"]] }
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["totalUpdatedRows"], 3);
    assert_eq!(batch["totalUpdatedCells"], 3);
    assert_eq!(batch["totalUpdatedSheets"], 2);
    assert_eq!(batch["responses"][1]["updatedRange"], "'My Sheet'!A1:A2");
    assert_eq!(h.sheets.values(&h.id, "Sheet1")[2], vec![json!(1)]);
    assert_eq!(h.sheets.values(&h.id, "My Sheet")[0], vec![json!("a")]);
}

#[tokio::test]
async fn writes_beyond_the_grid_fail_and_change_nothing() {
    let h = Harness::new().await;
    h.sheets
        .set_values(&h.id, "Sheet1", vec![vec![json!("keep")]]);
    let version = h.sheets.version(&h.id);
    let (status, body) = h
        .post(
            "/values:batchUpdate",
            json!({ "valueInputOption": "RAW", "data": [
                { "range": "Sheet1!A1", "values": [["overwritten"]] },
                { "range": "Sheet1!A1000", "values": [["last"], ["beyond"]] }
            ]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({ "error": {
            "code": 400,
            "message": "Range ('Sheet1'!A1001) exceeds grid limits. Max rows: 1000, max columns: 26",
            "status": "INVALID_ARGUMENT"
        }})
    );
    assert_eq!(h.sheets.values(&h.id, "Sheet1"), vec![vec![json!("keep")]]);
    assert_eq!(h.sheets.version(&h.id), version);
    let (status, body) = h
        .put(
            "/values/Sheet1!Z1?valueInputOption=RAW",
            json!({ "values": [["z", "beyond"]] }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "Range ('Sheet1'!AA1) exceeds grid limits. Max rows: 1000, max columns: 26"
    );
}

#[tokio::test]
async fn append_writes_after_the_table_and_inserts_rows() {
    let h = Harness::new().await;
    h.sheets.set_values(
        &h.id,
        "Sheet1",
        vec![
            vec![json!("_id"), json!("name")],
            vec![json!("r1"), json!("Ann")],
            vec![json!("r2")],
        ],
    );
    let (status, body) = h
        .post(
            "/values/Sheet1!A1:B1:append?valueInputOption=RAW&insertDataOption=INSERT_ROWS",
            json!({ "values": [["r3", "Cy"], ["r4", "Di"]] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tableRange"], "Sheet1!A1:B3");
    assert_eq!(
        body["updates"],
        json!({ "spreadsheetId": h.id, "updatedRange": "Sheet1!A4:B5", "updatedRows": 2, "updatedColumns": 2, "updatedCells": 4 })
    );
    assert_eq!(
        h.sheets.values(&h.id, "Sheet1")[3..],
        [
            vec![json!("r3"), json!("Cy")],
            vec![json!("r4"), json!("Di")]
        ]
    );
    assert_eq!(h.row_count(0).await, 1002);

    // Appending to a full sheet grows it.
    let (status, body) = h
        .put(
            "/values/'My Sheet'!A1000?valueInputOption=RAW",
            json!({ "values": [["last"]] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h
        .post(
            "/values/'My Sheet'!A1:append?valueInputOption=RAW",
            json!({ "values": [["more"]] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["updates"]["updatedRange"], "'My Sheet'!A1001");
    assert_eq!(h.row_count(1).await, 1001);
}

#[tokio::test]
async fn clear_empties_a_range() {
    let h = Harness::new().await;
    h.sheets.set_values(
        &h.id,
        "Sheet1",
        vec![
            vec![json!("a"), json!("b")],
            vec![json!("c"), json!("d")],
            vec![json!("e")],
        ],
    );
    let (status, body) = h.post("/values/Sheet1!B1:B:clear", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "spreadsheetId": h.id, "clearedRange": "Sheet1!B1:B1000" })
    );
    assert_eq!(
        h.sheets.values(&h.id, "Sheet1"),
        vec![vec![json!("a")], vec![json!("c")], vec![json!("e")]]
    );
    let (status, _) = h.post("/values/Sheet1:clear", json!({})).await;
    assert_eq!(status, 200);
    assert!(h.sheets.values(&h.id, "Sheet1").is_empty());
}

#[tokio::test]
async fn structural_batch_updates_are_atomic() {
    let h = Harness::new().await;
    let rows = (0..6).map(|i| vec![json!(format!("r{i}"))]).collect();
    h.sheets.set_values(&h.id, "Sheet1", rows);
    let delete = |start: u64, end: u64| json!({ "deleteDimension": { "range": { "sheetId": 0, "dimension": "ROWS", "startIndex": start, "endIndex": end } } });
    // Bottom-up, so the second delete's indexes still mean what they did.
    let (status, body) = h
        .post(
            ":batchUpdate",
            json!({ "requests": [delete(4, 5), delete(1, 3)] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "spreadsheetId": h.id, "replies": [{}, {}] }));
    assert_eq!(
        h.sheets.values(&h.id, "Sheet1"),
        vec![vec![json!("r0")], vec![json!("r3")], vec![json!("r5")]]
    );
    assert_eq!(h.row_count(0).await, 997);

    let before = h.sheets.values(&h.id, "Sheet1");
    let version = h.sheets.version(&h.id);
    for bad in [
        json!({ "requests": [delete(0, 1), { "frobnicate": {} }] }),
        json!({ "requests": [delete(0, 1), delete(990, 1001)] }),
        json!({ "requests": [delete(0, 1), { "deleteDimension": { "range": { "sheetId": 77, "dimension": "ROWS", "startIndex": 0, "endIndex": 1 } } }] }),
        json!({ "requests": [delete(0, 1), delete(0, 996)] }),
    ] {
        let (status, body) = h.post(":batchUpdate", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(
            h.sheets.values(&h.id, "Sheet1"),
            before,
            "{bad} changed the grid"
        );
        assert_eq!(h.row_count(0).await, 997);
    }
    assert_eq!(h.sheets.version(&h.id), version);

    let (status, body) = h
        .post(
            ":batchUpdate",
            json!({ "requests": [
                { "insertDimension": { "range": { "sheetId": 0, "dimension": "ROWS", "startIndex": 1, "endIndex": 2 }, "inheritFromBefore": true } },
                { "appendDimension": { "sheetId": 0, "dimension": "ROWS", "length": 10 } },
                { "addSheet": { "properties": { "title": "Log" } } }
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replies"][2]["addSheet"]["properties"]["title"], "Log");
    assert_eq!(
        h.sheets.values(&h.id, "Sheet1"),
        vec![
            vec![json!("r0")],
            vec![],
            vec![json!("r3")],
            vec![json!("r5")]
        ]
    );
    assert_eq!(h.row_count(0).await, 1008);
    assert!(h.sheets.values(&h.id, "Log").is_empty());
    let (status, _) = h
        .post(
            ":batchUpdate",
            json!({ "requests": [{ "addSheet": { "properties": { "title": "Log" } } }] }),
        )
        .await;
    assert_eq!(status, 400, "duplicate sheet title");
}

#[tokio::test]
async fn columns_can_be_hidden_and_move_with_inserts() {
    let h = Harness::new().await;
    let hide = json!({ "requests": [{ "updateDimensionProperties": {
        "range": { "sheetId": 0, "dimension": "COLUMNS", "startIndex": 1, "endIndex": 2 },
        "properties": { "hiddenByUser": true },
        "fields": "hiddenByUser"
    }}]});
    let (status, body) = h.post(":batchUpdate", hide).await;
    assert_eq!(status, 200, "{body}");
    let hidden = |meta: &Value| -> Vec<usize> {
        meta["sheets"][0]["data"][0]["columnMetadata"]
            .as_array()
            .expect("columnMetadata")
            .iter()
            .enumerate()
            .filter(|(_, c)| c["hiddenByUser"] == true)
            .map(|(i, _)| i)
            .collect()
    };
    let (_, meta) = h
        .get("?fields=sheets(properties,data.columnMetadata)")
        .await;
    assert_eq!(hidden(&meta), vec![1]);
    let (_, plain) = h.get("?fields=sheets.properties").await;
    assert!(plain["sheets"][0].get("data").is_none());
    let insert = json!({ "requests": [{ "insertDimension": {
        "range": { "sheetId": 0, "dimension": "COLUMNS", "startIndex": 0, "endIndex": 1 }
    }}]});
    assert_eq!(h.post(":batchUpdate", insert).await.0, 200);
    let (_, meta) = h
        .get("?fields=sheets(properties,data.columnMetadata)")
        .await;
    assert_eq!(hidden(&meta), vec![2]);
    assert_eq!(
        meta["sheets"][0]["properties"]["gridProperties"]["columnCount"],
        27
    );
    let delete = json!({ "requests": [{ "deleteDimension": {
        "range": { "sheetId": 0, "dimension": "COLUMNS", "startIndex": 0, "endIndex": 2 }
    }}]});
    assert_eq!(h.post(":batchUpdate", delete).await.0, 200);
    let (_, meta) = h
        .get("?fields=sheets(properties,data.columnMetadata)")
        .await;
    assert_eq!(hidden(&meta), vec![0]);
    assert_eq!(
        meta["sheets"][0]["properties"]["gridProperties"]["columnCount"],
        25
    );
}

#[tokio::test]
async fn quotas_answer_429_with_googles_body_and_refill_each_minute() {
    let h = Harness::new().await;
    h.sheets
        .control()
        .set_limit("read_per_minute_per_user", 5.0);
    for _ in 0..5 {
        assert_eq!(h.get("/values/Sheet1").await.0, 200);
    }
    let (status, body) = h.get("/values/Sheet1").await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({ "error": {
            "code": 429,
            "message": "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per user' of service 'sheets.googleapis.com' for consumer 'project_number:424242424242'.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "RATE_LIMIT_EXCEEDED",
                    "domain": "googleapis.com",
                    "metadata": {
                        "quota_location": "global",
                        "quota_metric": "sheets.googleapis.com/read_requests",
                        "quota_limit": "ReadRequestsPerMinutePerUser",
                        "quota_limit_value": "5",
                        "consumer": "projects/424242424242",
                        "service": "sheets.googleapis.com"
                    }
                },
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [{
                        "description": "Request a higher quota limit.",
                        "url": "https://cloud.google.com/docs/quotas/help/request_increase"
                    }]
                }
            ]
        }})
    );
    // Writes have their own bucket.
    let (status, _) = h
        .put(
            "/values/Sheet1!A1?valueInputOption=RAW",
            json!({ "values": [["x"]] }),
        )
        .await;
    assert_eq!(status, 200);
    h.sheets.control().advance(Duration::from_secs(60));
    assert_eq!(h.get("/values/Sheet1").await.0, 200);

    // The project's budget is shared by every user.
    h.sheets.control().set_limit("write_per_minute", 2.0);
    h.sheets.control().advance(Duration::from_secs(60));
    let other = h.token_for(OTHER_EMAIL, SCOPES).await;
    let other_id = h.sheets.create_spreadsheet(&[], &[OTHER_EMAIL]);
    let write = json!({ "values": [["x"]] });
    assert_eq!(
        h.put("/values/A1?valueInputOption=RAW", write.clone())
            .await
            .0,
        200
    );
    let path = format!("/v4/spreadsheets/{other_id}/values/A1?valueInputOption=RAW");
    assert_eq!(
        h.call_as(&other, Method::PUT, &path, Some(write.clone()))
            .await
            .0,
        200
    );
    let (status, body) = h.call_as(&other, Method::PUT, &path, Some(write)).await;
    assert_eq!(status, 429);
    assert_eq!(
        body["error"]["details"][0]["metadata"]["quota_metric"],
        "sheets.googleapis.com/write_requests"
    );
    assert_eq!(
        body["error"]["details"][0]["metadata"]["quota_limit"],
        "WriteRequestsPerMinutePerProject"
    );
}

#[tokio::test]
async fn the_drive_version_rises_on_every_write() {
    let h = Harness::new().await;
    let (v0, t0) = h.drive_version().await;
    let (status, _) = h
        .put(
            "/values/Sheet1!A1?valueInputOption=RAW",
            json!({ "values": [["a"]] }),
        )
        .await;
    assert_eq!(status, 200);
    h.sheets.control().advance(Duration::from_secs(5));
    let (v1, _) = h.drive_version().await;
    h.sheets.set_values(&h.id, "Sheet1", vec![vec![json!("b")]]);
    let (v2, t2) = h.drive_version().await;
    let (status, _) = h
        .post(":batchUpdate", json!({ "requests": [{ "appendDimension": { "sheetId": 0, "dimension": "ROWS", "length": 1 } }] }))
        .await;
    assert_eq!(status, 200);
    let (v3, _) = h.drive_version().await;
    let (status, _) = h
        .put(
            "/values/Sheet1!A1?valueInputOption=BOGUS",
            json!({ "values": [["c"]] }),
        )
        .await;
    assert_eq!(status, 400);
    let (v4, _) = h.drive_version().await;
    let numbers: Vec<u64> = [&v0, &v1, &v2, &v3, &v4]
        .iter()
        .map(|v| v.parse().expect("number"))
        .collect();
    assert_eq!(numbers[1], numbers[0] + 1);
    assert_eq!(numbers[2], numbers[1] + 1);
    assert_eq!(numbers[3], numbers[2] + 1);
    assert_eq!(numbers[4], numbers[3], "a failed write is no write");
    assert_eq!(h.sheets.version(&h.id), numbers[3]);
    assert!(t2 > t0, "{t2} should be after {t0}");
    assert_eq!(t0, "2027-01-15T08:00:00.000Z");

    let sheets_only = h
        .token_for(EMAIL, "https://www.googleapis.com/auth/spreadsheets")
        .await;
    let (status, body) = h
        .call_as(
            &sheets_only,
            Method::GET,
            &format!("/drive/v3/files/{}?fields=version", h.id),
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn cell_and_character_limits_are_enforced() {
    let h = Harness::new().await;
    h.sheets.control().set_limit("max_cell_chars", 10.0);
    let (status, body) = h
        .put(
            "/values/Sheet1!A1?valueInputOption=RAW",
            json!({ "values": [["x".repeat(11)]] }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "Your input contains more than the maximum of 10 characters in a single cell."
    );
    h.sheets.control().set_limit("max_cells", 52_000.0);
    let (status, body) = h
        .post(":batchUpdate", json!({ "requests": [{ "appendDimension": { "sheetId": 0, "dimension": "ROWS", "length": 1 } }] }))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(h.row_count(0).await, 1000);
}

#[tokio::test]
async fn control_faults_and_the_request_log_apply() {
    let h = Harness::new().await;
    h.sheets.control().clear_log();
    h.sheets.control().inject(
        Fault::status(
            503,
            json!({ "error": { "code": 503, "status": "UNAVAILABLE", "message": "try later" } }),
        )
        .path_contains("/values/"),
    );
    let (status, body) = h.get("/values/Sheet1").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["status"], "UNAVAILABLE");
    assert_eq!(h.get("/values/Sheet1").await.0, 200);
    assert_eq!(h.get("/values:batchGet?ranges=Sheet1").await.0, 200);
    let log = h.sheets.control().requests();
    assert_eq!(log.len(), 3);
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 200, 200]
    );
    assert!(
        log.iter().all(|r| !r.is_mutating(&[])),
        "reads are not mutations"
    );
    let (status, _) = h.post("/values/Sheet1:clear", json!({})).await;
    assert_eq!(status, 200);
    assert!(
        h.sheets
            .control()
            .requests()
            .last()
            .is_some_and(|r| r.is_mutating(&[]))
    );
}

#[tokio::test]
async fn scopes_decide_reads_and_writes_and_any_scope_gets_a_token() {
    let h = Harness::new().await;
    let read_only = h
        .token_for(
            EMAIL,
            "https://www.googleapis.com/auth/spreadsheets.readonly",
        )
        .await;
    let drive_read_only = h
        .token_for(EMAIL, "https://www.googleapis.com/auth/drive.readonly")
        .await;
    // Tokens without the spreadsheets scope are still issued.
    let drive = h
        .token_for(EMAIL, "https://www.googleapis.com/auth/drive")
        .await;
    let drive_file = h
        .token_for(EMAIL, "https://www.googleapis.com/auth/drive.file")
        .await;
    let unrelated = h
        .token_for(EMAIL, "https://www.googleapis.com/auth/calendar")
        .await;
    let put = |token: String| {
        let path = h.sheet_path("/values/Sheet1!A1?valueInputOption=RAW");
        let h = &h;
        async move {
            h.call_as(
                &token,
                Method::PUT,
                &path,
                Some(json!({ "values": [["x"]] })),
            )
            .await
        }
    };
    let writes = [
        (
            Method::PUT,
            "/values/Sheet1!A1?valueInputOption=RAW",
            json!({ "values": [["x"]] }),
        ),
        (
            Method::POST,
            "/values:batchUpdate",
            json!({ "valueInputOption": "RAW", "data": [] }),
        ),
        (
            Method::POST,
            "/values/Sheet1!A1:append?valueInputOption=RAW",
            json!({ "values": [["x"]] }),
        ),
        (Method::POST, "/values/Sheet1!A1:clear", json!({})),
        (Method::POST, "/values:batchClear", json!({ "ranges": [] })),
        (Method::POST, ":batchUpdate", json!({ "requests": [] })),
    ];
    for token in [&read_only, &drive_read_only, &unrelated] {
        for (method, rest, body) in &writes {
            let (status, body) = h
                .call_as(
                    token,
                    method.clone(),
                    &h.sheet_path(rest),
                    Some(body.clone()),
                )
                .await;
            assert_eq!(status, 403, "{method} {rest}: {body}");
            assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
            assert_eq!(
                body["error"]["message"],
                "Request had insufficient authentication scopes."
            );
        }
    }
    for token in [&read_only, &drive_read_only, &drive, &drive_file] {
        let (status, body) = h
            .call_as(token, Method::GET, &h.sheet_path("/values/Sheet1!A1"), None)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = h
        .call_as(&unrelated, Method::GET, &h.sheet_path(""), None)
        .await;
    assert_eq!(status, 403);
    for token in [drive, drive_file] {
        let (status, body) = put(token).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test]
async fn user_entered_formulas_render_by_value_render_option() {
    let h = Harness::new().await;
    let (status, body) = h
        .put(
            "/values/Sheet1!A1?valueInputOption=USER_ENTERED",
            json!({ "values": [["=1+1", "=42", "=SUM(1,2)", "'=1+1"]] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h
        .put(
            "/values/Sheet1!A2?valueInputOption=RAW",
            json!({ "values": [["=1+1"]] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let read = |option: &'static str| {
        let h = &h;
        async move {
            let (status, body) = h
                .get(&format!("/values/Sheet1!A1:D2?valueRenderOption={option}"))
                .await;
            assert_eq!(status, 200, "{body}");
            body["values"].clone()
        }
    };
    assert_eq!(
        read("FORMULA").await,
        json!([["=1+1", "=42", "=SUM(1,2)", "=1+1"], ["=1+1"]])
    );
    assert_eq!(
        read("UNFORMATTED_VALUE").await,
        json!([[2, 42, "#NAME?", "=1+1"], ["=1+1"]])
    );
    assert_eq!(
        read("FORMATTED_VALUE").await,
        json!([["2", "42", "#NAME?", "=1+1"], ["=1+1"]])
    );

    // A person typing `=…` enters a formula; a numeric-looking string stays text.
    h.sheets
        .set_values(&h.id, "Sheet1", vec![vec![json!("=2*3"), json!("007")]]);
    assert_eq!(
        h.sheets.values(&h.id, "Sheet1"),
        vec![vec![json!(6), json!("007")]]
    );
    assert_eq!(read("FORMULA").await, json!([["=2*3", "007"]]));
}

#[tokio::test]
async fn append_finds_the_first_contiguous_table_and_its_first_column() {
    let h = Harness::new().await;
    let e = || json!("");
    h.sheets.set_values(
        &h.id,
        "Sheet1",
        vec![
            vec![],
            vec![e(), json!("_id"), json!("name")],
            vec![e(), json!("r1"), json!("Ann")],
            vec![],
            vec![e(), json!("notes below a blank row")],
        ],
    );
    let (status, body) = h
        .post(
            "/values/Sheet1!A1:D1:append?valueInputOption=RAW&insertDataOption=OVERWRITE",
            json!({ "values": [["r2", "Bo"]] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tableRange"], "Sheet1!B2:C3");
    assert_eq!(body["updates"]["updatedRange"], "Sheet1!B4:C4");
    let rows = h.sheets.values(&h.id, "Sheet1");
    assert_eq!(rows[3], vec![json!(""), json!("r2"), json!("Bo")]);
    assert_eq!(rows[4], vec![json!(""), json!("notes below a blank row")]);

    // No data at all: no tableRange, written at the range's first cell.
    let (status, body) = h
        .post(
            "/values/'My Sheet'!C3:append?valueInputOption=RAW",
            json!({ "values": [["x"]] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("tableRange").is_none(), "{body}");
    assert_eq!(body["updates"]["updatedRange"], "'My Sheet'!C3");
}

#[tokio::test]
async fn versions_rise_by_the_configured_step_and_by_invisible_changes() {
    let h = Harness::new().await;
    h.sheets.control().set_limit("version_step", 5.0);
    let v0 = h.sheets.version(&h.id);
    let (status, _) = h
        .put(
            "/values/Sheet1!A1?valueInputOption=RAW",
            json!({ "values": [["a"]] }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(h.sheets.version(&h.id), v0 + 5);
    h.sheets.set_values(&h.id, "Sheet1", vec![vec![json!("b")]]);
    assert_eq!(h.sheets.version(&h.id), v0 + 10);
    let before = h.sheets.values(&h.id, "Sheet1");
    h.sheets.control().advance(Duration::from_secs(3));
    let (_, t_before) = h.drive_version().await;
    h.sheets.bump_version(&h.id, 3);
    let (version, t_after) = h.drive_version().await;
    assert_eq!(version, (v0 + 13).to_string());
    assert!(t_after > t_before, "{t_after} vs {t_before}");
    assert_eq!(h.sheets.values(&h.id, "Sheet1"), before);
}

#[tokio::test]
async fn auth_failures_carry_bearer_challenges_and_error_info() {
    let h = Harness::new().await;
    let send = |token: Option<&'static str>| {
        let url = format!("{}{}", h.base, h.sheet_path(""));
        let client = h.client.clone();
        async move {
            let mut request = client.get(url);
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            let response = request.send().await.expect("send");
            let status = response.status().as_u16();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body: Value = response.json().await.expect("json");
            (status, challenge, body)
        }
    };
    let (status, challenge, body) = send(Some("ya29.not-a-real-token")).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge.as_deref(),
        Some(r#"Bearer realm="https://accounts.google.com/", error="invalid_token""#)
    );
    assert_eq!(
        body["error"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    assert_eq!(
        body["error"]["details"][0]["reason"],
        "ACCESS_TOKEN_TYPE_UNSUPPORTED"
    );
    let (status, challenge, body) = send(None).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge.as_deref(),
        Some(r#"Bearer realm="https://accounts.google.com/""#)
    );
    assert_eq!(body["error"]["details"][0]["reason"], "CREDENTIALS_MISSING");
}

#[tokio::test]
async fn answers_omit_empty_fields_and_count_only_written_cells() {
    let h = Harness::new().await;
    let (status, body) = h.get("/values:batchGet").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "spreadsheetId": h.id }));
    let (status, body) = h
        .post(
            "/values:batchUpdate",
            json!({ "valueInputOption": "RAW", "data": [] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "spreadsheetId": h.id }));
    let (status, body) = h.post("/values:batchClear", json!({ "ranges": [] })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "spreadsheetId": h.id }));

    // Nulls leave cells alone and are not counted.
    let (status, body) = h
        .put(
            "/values/Sheet1!A1?valueInputOption=RAW",
            json!({ "values": [["a", null, "c"], [null, null, null]] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "spreadsheetId": h.id,
            "updatedRange": "Sheet1!A1:C2",
            "updatedRows": 1,
            "updatedColumns": 2,
            "updatedCells": 2,
        })
    );
    let (status, body) = h
        .post(
            "/values:batchUpdate",
            json!({ "valueInputOption": "RAW", "data": [
                { "range": "Sheet1!A5", "values": [[null, "x"]] }
            ] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totalUpdatedCells"], 1);
    assert_eq!(body["totalUpdatedRows"], 1);
    assert_eq!(body["totalUpdatedColumns"], 1);
    assert_eq!(body["totalUpdatedSheets"], 1);
}

#[tokio::test]
async fn an_unencoded_slash_in_a_range_is_not_found() {
    let h = Harness::new().await;
    let (status, body) = h
        .post(
            ":batchUpdate",
            json!({ "requests": [{ "addSheet": { "properties": { "title": "a/b" } } }] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h.get("/values/a/b!A1").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["status"], "NOT_FOUND");
    let (status, body) = h
        .put(
            "/values/a/b!A1?valueInputOption=RAW",
            json!({ "values": [["x"]] }),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = h
        .put(
            "/values/a%2Fb!A1?valueInputOption=RAW",
            json!({ "values": [["x"]] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h.get("/values/a%2Fb!A1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["values"], json!([["x"]]));
}

/// `includeValuesInResponse` (values.update, values.append and
/// values.batchUpdate) answers with `updatedData`: the cells after the
/// write, rendered by `responseValueRenderOption`; without it, no values.
#[tokio::test]
async fn writes_answer_with_the_updated_values_when_asked() {
    let h = Harness::new().await;
    let (status, body) = h
        .put(
            "/values/Sheet1!A1:C2?valueInputOption=USER_ENTERED&includeValuesInResponse=true&responseValueRenderOption=UNFORMATTED_VALUE",
            json!({ "values": [["a", "2"], ["=1+2"]] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["updatedData"],
        json!({ "range": "Sheet1!A1:C2", "majorDimension": "ROWS", "values": [["a", 2], [3]] })
    );
    // Formulas render as asked; the default is FORMATTED_VALUE.
    let (_, body) = h
        .put(
            "/values/Sheet1!A2?valueInputOption=USER_ENTERED&includeValuesInResponse=true&responseValueRenderOption=FORMULA",
            json!({ "values": [["=2+2"]] }),
        )
        .await;
    assert_eq!(body["updatedData"]["range"], "Sheet1!A2");
    assert_eq!(body["updatedData"]["values"], json!([["=2+2"]]));
    let (_, body) = h
        .put(
            "/values/Sheet1!B2?valueInputOption=RAW&includeValuesInResponse=true",
            json!({ "values": [[7]] }),
        )
        .await;
    assert_eq!(body["updatedData"]["values"], json!([["7"]]));
    let (_, body) = h
        .put(
            "/values/Sheet1!B2?valueInputOption=RAW",
            json!({ "values": [[8]] }),
        )
        .await;
    assert!(body.get("updatedData").is_none(), "{body}");
    let (status, body) = h
        .put(
            "/values/Sheet1!B2?valueInputOption=RAW&includeValuesInResponse=yes",
            json!({ "values": [[8]] }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = h
        .put(
            "/values/Sheet1!B2?valueInputOption=RAW&includeValuesInResponse=true&responseValueRenderOption=PRETTY",
            json!({ "values": [[8]] }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");

    // append: the appended cells.
    let (status, body) = h
        .post(
            "/values/Sheet1!A1:append?valueInputOption=RAW&includeValuesInResponse=true&responseValueRenderOption=UNFORMATTED_VALUE",
            json!({ "values": [["x", 5]] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["updates"]["updatedRange"], "Sheet1!A3:B3");
    assert_eq!(
        body["updates"]["updatedData"],
        json!({ "range": "Sheet1!A3:B3", "majorDimension": "ROWS", "values": [["x", 5]] })
    );

    // batchUpdate: each response, after the whole batch.
    let (status, body) = h
        .post(
            "/values:batchUpdate",
            json!({
                "valueInputOption": "RAW",
                "includeValuesInResponse": true,
                "responseValueRenderOption": "UNFORMATTED_VALUE",
                "data": [
                    { "range": "'My Sheet'!A1", "values": [[1, 2]] },
                    { "range": "'My Sheet'!A1:A1", "values": [[9]] },
                ],
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["responses"][0]["updatedData"],
        json!({ "range": "'My Sheet'!A1:B1", "majorDimension": "ROWS", "values": [[9, 2]] })
    );
    assert_eq!(body["responses"][1]["updatedData"]["values"], json!([[9]]));
    let (_, body) = h
        .post(
            "/values:batchUpdate",
            json!({ "valueInputOption": "RAW", "data": [{ "range": "Sheet1!D1", "values": [[1]] }] }),
        )
        .await;
    assert!(body["responses"][0].get("updatedData").is_none(), "{body}");
}

/// `updateSheetProperties` changes what its `fields` mask names, and
/// `includeSpreadsheetInResponse` answers with the spreadsheet after the
/// whole batch.
#[tokio::test]
async fn update_sheet_properties_applies_its_field_mask() {
    let h = Harness::new().await;
    h.sheets.set_values(
        &h.id,
        "Sheet1",
        vec![vec![json!("a")], vec![json!("b")], vec![json!("c")]],
    );
    let (status, body) = h
        .post(
            ":batchUpdate",
            json!({
                "requests": [{ "updateSheetProperties": {
                    "properties": { "sheetId": 0, "title": "Data", "gridProperties": { "frozenRowCount": 1, "rowCount": 2, "columnCount": 5 } },
                    "fields": "title,gridProperties.frozenRowCount,gridProperties.rowCount",
                }}],
                "includeSpreadsheetInResponse": true,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replies"], json!([{}]));
    let props = &body["updatedSpreadsheet"]["sheets"][0]["properties"];
    assert_eq!(props["title"], "Data");
    // columnCount was not in the mask: unchanged.
    assert_eq!(
        props["gridProperties"],
        json!({ "rowCount": 2, "columnCount": 26, "frozenRowCount": 1 })
    );
    assert_eq!(body["updatedSpreadsheet"]["spreadsheetId"], h.id.as_str());
    assert_eq!(
        h.sheets.values(&h.id, "Data"),
        vec![vec![json!("a")], vec![json!("b")]]
    );
    let (_, meta) = h
        .get("?fields=sheets.properties(title,gridProperties)")
        .await;
    assert_eq!(
        meta["sheets"][0]["properties"]["gridProperties"]["frozenRowCount"],
        1
    );

    // A masked field missing from properties takes its default: unfreeze.
    let (status, body) = h
        .post(
            ":batchUpdate",
            json!({ "requests": [{ "updateSheetProperties": {
                "properties": { "sheetId": 0 }, "fields": "gridProperties.frozenRowCount",
            }}] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("updatedSpreadsheet").is_none(), "{body}");
    let (_, meta) = h.get("?fields=sheets.properties.gridProperties").await;
    assert!(
        meta["sheets"][0]["properties"]["gridProperties"]
            .get("frozenRowCount")
            .is_none()
    );

    let refused = [
        (
            json!({ "properties": { "sheetId": 0, "title": "x" } }),
            "fields is required",
        ),
        (
            json!({ "properties": { "sheetId": 42, "title": "x" }, "fields": "title" }),
            "No grid with id: 42",
        ),
        (
            json!({ "properties": { "sheetId": 0, "title": "My Sheet" }, "fields": "title" }),
            "already exists",
        ),
        (
            json!({ "properties": { "sheetId": 0, "gridProperties": { "frozenRowCount": 2 } }, "fields": "gridProperties.frozenRowCount" }),
            "freeze all visible rows",
        ),
        (
            json!({ "properties": { "sheetId": 0 }, "fields": "colour" }),
            "colour",
        ),
    ];
    for (request, message) in refused {
        let (status, body) = h
            .post(
                ":batchUpdate",
                json!({ "requests": [{ "updateSheetProperties": request }] }),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
        let text = body["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{text}");
    }
    assert_eq!(
        h.sheets.values(&h.id, "Data").len(),
        2,
        "refusals change nothing"
    );
}

/// Drive `files.get` answers the File fields clients ask for (gspread's
/// `open_by_key` asks for `createdTime` and `modifiedTime`), with nested
/// selections, and refuses fields File does not have.
#[tokio::test]
async fn drive_files_get_answers_the_common_file_fields() {
    let h = Harness::new().await;
    h.sheets.control().advance(Duration::from_secs(60));
    let (status, _) = h
        .put(
            "/values/Sheet1!A1?valueInputOption=RAW",
            json!({ "values": [["a"]] }),
        )
        .await;
    assert_eq!(status, 200);
    let harness = &h;
    let file = |fields: &str| {
        let path = format!("/drive/v3/files/{}?fields={fields}", harness.id);
        async move { harness.call(Method::GET, &path, None).await }
    };
    let (status, body) = file("id,name,createdTime,modifiedTime").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "id": h.id,
            "name": "Untitled spreadsheet",
            "createdTime": "2027-01-15T08:00:00.000Z",
            "modifiedTime": "2027-01-15T08:01:00.000Z",
        })
    );
    let (status, body) =
        file("owners(emailAddress),capabilities/canEdit,webViewLink,trashed,shared").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["owners"][0]["emailAddress"].is_string(), "{body}");
    assert_eq!(body["owners"][0].as_object().map(|o| o.len()), Some(1));
    assert_eq!(body["capabilities"], json!({ "canEdit": true }));
    assert_eq!(body["trashed"], false);
    assert_eq!(body["shared"], true);
    assert!(
        body["webViewLink"]
            .as_str()
            .is_some_and(|l| l.contains(&h.id))
    );
    // The default selection, and everything.
    let (_, body) = h
        .call(Method::GET, &format!("/drive/v3/files/{}", h.id), None)
        .await;
    assert_eq!(
        body,
        json!({ "kind": "drive#file", "id": h.id, "name": "Untitled spreadsheet", "mimeType": "application/vnd.google-apps.spreadsheet" })
    );
    let (_, body) = file("*").await;
    assert_eq!(body["version"], "2");
    assert_eq!(body["mimeType"], "application/vnd.google-apps.spreadsheet");
    let (status, body) = file("id,colour").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = file("owners(shoeSize)").await;
    assert_eq!(status, 400, "{body}");
}
