//! The HTTP API over loopback, as a deploy pipeline and other tools use it:
//! upsert by a unique field with a bearer token, patch, read back; every
//! auth failure; `If-Match`; pages under concurrent writes; problem details;
//! the OpenAPI document; metrics; the rate limit.

use std::collections::BTreeSet;
use std::time::Duration;

use chittysync::{FieldDef, FieldKind, Replica, Role, Schema, TokenSpec};
use chittysync_server::{HttpOptions, Service};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Hub {
    _dir: tempfile::TempDir,
    replica: Replica,
    base: String,
    client: reqwest::Client,
}

fn schema() -> Schema {
    Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required().unique())
        .field(FieldDef::new("owner", FieldKind::Email))
        .field(FieldDef::new("port", FieldKind::Integer).range(Some(1.0), Some(65535.0)))
        .field(FieldDef::new("status", FieldKind::Select).options(["planned", "live", "retired"]))
        .field(FieldDef::new("weight", FieldKind::Decimal))
}

async fn hub(options: HttpOptions) -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("hub.db")).unwrap();
    replica.create_registry("services", schema()).unwrap();
    replica.create_registry("secrets", schema()).unwrap();
    let service = Service::new(replica.clone(), options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { service.serve(listener, std::future::pending()).await });
    Hub {
        _dir: dir,
        replica,
        base,
        client: reqwest::Client::new(),
    }
}

impl Hub {
    fn token(
        &self,
        name: &str,
        registries: &[&str],
        role: Role,
        expires: Option<Duration>,
    ) -> String {
        self.replica
            .add_token(&TokenSpec {
                name: name.into(),
                registries: registries.iter().map(|r| (*r).to_owned()).collect(),
                role,
                expires_in: expires,
            })
            .unwrap()
            .secret
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(etag) = if_match {
            request = request.header("If-Match", etag);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }
}

use reqwest::Method;

#[tokio::test]
async fn a_deploy_pipeline_upserts_by_name_patches_and_reads_back_signed_by_its_token() {
    let hub = hub(HttpOptions::default()).await;
    let token = hub.token("deploy-bot", &["services"], Role::Writer, None);
    let path = "/v1/registries/services/records/by/name/billing";
    let body = json!({"fields": {"owner": "ledger@example.com", "port": 8080}});

    let (status, headers, created) = hub
        .send(Method::PUT, path, Some(&token), Some(body.clone()), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(headers.get("location").is_some());
    assert_eq!(created["fields"]["port"], 8080);
    assert_eq!(created["fields"]["name"], "billing");
    let id = created["id"].as_str().unwrap().to_owned();

    // The same request again: one record, nothing written.
    let services = hub.replica.registry("services").unwrap();
    let changes = services.change_count();
    let (status, _, again) = hub
        .send(Method::PUT, path, Some(&token), Some(body), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], id.as_str());
    assert_eq!(
        services.change_count(),
        changes,
        "an unchanged upsert wrote a change"
    );
    assert_eq!(services.len(), 1);

    let (status, _, patched) = hub
        .send(
            Method::PATCH,
            &format!("/v1/registries/services/records/{id}"),
            Some(&token),
            Some(json!({"fields": {"status": "live", "port": null}})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["fields"]["status"], "live");
    assert!(patched["fields"].get("port").is_none());
    assert_eq!(patched["fields"]["owner"], "ledger@example.com");

    // A pipeline that knows the service by name patches it by name.
    let (status, _, by_name) = hub
        .send(
            Method::PATCH,
            path,
            Some(&token),
            Some(json!({"fields": {"port": 8443}})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{by_name}");
    assert_eq!(by_name["id"], id.as_str());
    assert_eq!(by_name["fields"]["port"], 8443);
    assert_eq!(by_name["fields"]["status"], "live");
    let (status, _, _) = hub
        .send(
            Method::PATCH,
            "/v1/registries/services/records/by/name/nothing",
            Some(&token),
            Some(json!({"fields": {"port": 1}})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _, page) = hub
        .send(
            Method::GET,
            "/v1/registries/services/records?where=owner:ledger@example.com",
            Some(&token),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["records"].as_array().unwrap().len(), 1);
    assert_eq!(page["records"][0]["fields"]["status"], "live");

    // Signed by the token's key, named in the change, shown in the audit.
    let key = hub.replica.token("deploy-bot").unwrap().key;
    let audit = services.audit(&chittysync::AuditFilter::default()).unwrap();
    let by_token: Vec<_> = audit.iter().filter(|e| e.author == key).collect();
    assert_eq!(by_token.len(), 3, "the upsert and the two patches");
    assert!(by_token.iter().all(|e| {
        e.message
            .as_deref()
            .is_some_and(|m| m.contains("token deploy-bot"))
    }));
}

#[tokio::test]
async fn every_auth_failure_is_answered_as_documented() {
    let hub = hub(HttpOptions::default()).await;
    let writer = hub.token("writer", &["services"], Role::Writer, None);
    let reader = hub.token("reader", &["services"], Role::Reader, None);
    let expired = hub.token("old", &["services"], Role::Writer, Some(Duration::ZERO));
    let list = "/v1/registries/services/records";

    let (status, headers, problem) = hub.send(Method::GET, list, None, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(problem["status"], 401);
    for bad in ["cst_0000", expired.as_str()] {
        let (status, _, _) = hub.send(Method::GET, list, Some(bad), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    // The secret never comes back in an answer.
    let (_, _, problem) = hub
        .send(Method::GET, list, Some(&expired), None, None)
        .await;
    assert!(!problem.to_string().contains(&expired));

    let (status, _, problem) = hub
        .send(
            Method::POST,
            list,
            Some(&reader),
            Some(json!({"fields": {"name": "x"}})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(hub.replica.registry("services").unwrap().len(), 0);

    // A registry the token may not see looks exactly like one that does not exist.
    let (hidden_status, _, hidden) = hub
        .send(
            Method::GET,
            "/v1/registries/secrets/records",
            Some(&writer),
            None,
            None,
        )
        .await;
    let (missing_status, _, missing) = hub
        .send(
            Method::GET,
            "/v1/registries/nothing/records",
            Some(&writer),
            None,
            None,
        )
        .await;
    assert_eq!(hidden_status, StatusCode::NOT_FOUND);
    assert_eq!(missing_status, StatusCode::NOT_FOUND);
    assert_eq!(
        hidden.to_string().replace("secrets", "NAME"),
        missing.to_string().replace("nothing", "NAME")
    );
    let (_, _, listed) = hub
        .send(Method::GET, "/v1/registries", Some(&writer), None, None)
        .await;
    let names: Vec<&str> = listed["registries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["services"]);
}

#[tokio::test]
async fn if_match_refuses_a_write_based_on_a_stale_read() {
    let hub = hub(HttpOptions::default()).await;
    let token = hub.token("ci", &["services"], Role::Writer, None);
    let (status, _, created) = hub
        .send(
            Method::POST,
            "/v1/registries/services/records",
            Some(&token),
            Some(json!({"fields": {"name": "search", "port": 81}})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let record = format!(
        "/v1/registries/services/records/{}",
        created["id"].as_str().unwrap()
    );
    let (_, headers, _) = hub
        .send(Method::GET, &record, Some(&token), None, None)
        .await;
    let read = headers["etag"].to_str().unwrap().to_owned();

    // Someone else writes meanwhile.
    hub.replica
        .registry("services")
        .unwrap()
        .put(None, [("name", "mail")])
        .unwrap();

    let (status, _, problem) = hub
        .send(
            Method::PATCH,
            &record,
            Some(&token),
            Some(json!({"fields": {"port": 82}})),
            Some(&read),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{problem}");
    let (_, headers, now) = hub
        .send(Method::GET, &record, Some(&token), None, None)
        .await;
    assert_eq!(now["fields"]["port"], 81, "a refused write changed nothing");
    let current = headers["etag"].to_str().unwrap().to_owned();
    assert_ne!(current, read);
    let (status, headers, _) = hub
        .send(
            Method::PATCH,
            &record,
            Some(&token),
            Some(json!({"fields": {"port": 82}})),
            Some(&current),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(headers["etag"].to_str().unwrap(), current);
    let (status, _, _) = hub
        .send(Method::DELETE, &record, Some(&token), None, Some(&current))
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn pages_neither_skip_nor_repeat_records_while_others_are_written() {
    let hub = hub(HttpOptions::default()).await;
    let token = hub.token("reader", &["services"], Role::Reader, None);
    let services = hub.replica.registry("services").unwrap();
    let mut original = BTreeSet::new();
    for i in 0..40 {
        original.insert(services.put(None, [("name", format!("s{i:02}"))]).unwrap());
    }
    for sort in ["", "&sort=name", "&sort=-name"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut round = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/registries/services/records?limit=7{sort}&cursor={c}"),
                None => format!("/v1/registries/services/records?limit=7{sort}"),
            };
            let (status, _, page) = hub.send(Method::GET, &path, Some(&token), None, None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            for r in page["records"].as_array().unwrap() {
                seen.push(r["id"].as_str().unwrap().to_owned());
            }
            // Writes between pages: new records sorting everywhere.
            round += 1;
            services
                .put(None, [("name", format!("a{sort}{round}"))])
                .unwrap();
            services
                .put(None, [("name", format!("z{sort}{round}"))])
                .unwrap();
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "a record was repeated ({sort})");
        assert!(
            original.iter().all(|id| unique.contains(id)),
            "a record that existed throughout was skipped ({sort})"
        );
    }
    let (status, _, problem) = hub
        .send(
            Method::GET,
            "/v1/registries/services/records?cursor=zz",
            Some(&token),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
}

#[tokio::test]
async fn a_value_that_breaks_the_schema_is_named_and_nothing_is_written() {
    let hub = hub(HttpOptions::default()).await;
    let token = hub.token("ci", &["services"], Role::Writer, None);
    let changes = hub.replica.registry("services").unwrap().change_count();
    for (fields, field, rule) in [
        (json!({"name": "x", "port": 70000}), "port", "max"),
        (json!({"name": "x", "port": "eighty"}), "port", "type"),
        (json!({"name": "x", "status": "gone"}), "status", "options"),
        (
            json!({"name": "x", "colour": "red"}),
            "colour",
            "unknown-field",
        ),
    ] {
        let (status, headers, problem) = hub
            .send(
                Method::POST,
                "/v1/registries/services/records",
                Some(&token),
                Some(json!({ "fields": fields })),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(problem["field"], field, "{problem}");
        assert_eq!(problem["rule"], rule, "{problem}");
    }
    let (status, _, problem) = hub
        .send(
            Method::POST,
            "/v1/registries/services/records",
            Some(&token),
            Some(json!({"name": "not wrapped in fields"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(hub.replica.registry("services").unwrap().len(), 0);
    assert_eq!(
        hub.replica.registry("services").unwrap().change_count(),
        changes
    );
}

#[tokio::test]
async fn operations_endpoints_openapi_and_metrics_answer() {
    let hub = hub(HttpOptions::default()).await;
    let token = hub.token("ci", &["services"], Role::Reader, None);
    let (status, _, health) = hub.send(Method::GET, "/health", None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    let (status, _, _) = hub.send(Method::GET, "/ready", None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, doc) = hub
        .send(Method::GET, "/v1/openapi.json", None, None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(
        doc["paths"]["/v1/registries/{registry}/records/by/{field}/{value}"]["put"].is_object()
    );
    hub.send(
        Method::GET,
        "/v1/registries/services/records",
        Some(&token),
        None,
        None,
    )
    .await;
    let (status, headers, metrics) = hub.send(Method::GET, "/metrics", None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains(r#"chittysync_http_requests_total{route="/v1/registries/{registry}/records",method="GET",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains("chittysync_http_request_duration_seconds_bucket"));
    assert!(text.contains("chittysync_registries 2"));
    assert!(text.contains("chittysync_api_tokens 1"));
    assert!(text.contains("chittysync_journal_entries "));
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after() {
    let hub = hub(HttpOptions {
        requests_per_minute: 2,
        ..HttpOptions::default()
    })
    .await;
    let token = hub.token("busy", &["services"], Role::Reader, None);
    let other = hub.token("calm", &["services"], Role::Reader, None);
    let list = "/v1/registries/services/records";
    for _ in 0..2 {
        let (status, _, _) = hub.send(Method::GET, list, Some(&token), None, None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, problem) = hub.send(Method::GET, list, Some(&token), None, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // Another token has its own budget.
    let (status, _, _) = hub.send(Method::GET, list, Some(&other), None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn audit_conflicts_status_and_journal_are_served_for_the_tokens_registries() {
    let hub = hub(HttpOptions::default()).await;
    let token = hub.token("ci", &["services"], Role::Writer, None);
    let reader = hub.token("viewer", &["services"], Role::Reader, None);
    for i in 0..5 {
        let (status, _, _) = hub
            .send(
                Method::PUT,
                &format!("/v1/registries/services/records/by/name/s{i}"),
                Some(&token),
                Some(json!({"fields": {"port": 8000 + i}})),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, _, first) = hub
        .send(
            Method::GET,
            "/v1/registries/services/audit?limit=3",
            Some(&reader),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["entries"].as_array().unwrap().len(), 3);
    let after = first["next_after"].as_i64().unwrap();
    let (_, _, rest) = hub
        .send(
            Method::GET,
            &format!("/v1/registries/services/audit?after={after}"),
            Some(&reader),
            None,
            None,
        )
        .await;
    let all = hub
        .replica
        .registry("services")
        .unwrap()
        .audit(&chittysync::AuditFilter::all())
        .unwrap();
    assert_eq!(
        first["entries"].as_array().unwrap().len() + rest["entries"].as_array().unwrap().len(),
        all.len()
    );
    assert!(rest.to_string().contains("token ci"));
    let lines = hub
        .client
        .get(hub.url("/v1/registries/services/audit"))
        .bearer_auth(&reader)
        .header("Accept", "application/jsonl")
        .send()
        .await
        .unwrap();
    assert_eq!(lines.headers()["content-type"], "application/jsonl");
    assert_eq!(lines.text().await.unwrap().lines().count(), all.len());

    let (status, _, conflicts) = hub
        .send(
            Method::GET,
            "/v1/registries/services/conflicts",
            Some(&reader),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(conflicts["conflicts"], json!([]));
    let (status, _, _) = hub
        .send(
            Method::POST,
            "/v1/registries/services/conflicts/resolve",
            Some(&token),
            Some(json!({"record": "nothing", "field": "port", "value": 1})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, standing) = hub
        .send(
            Method::GET,
            "/v1/registries/services/status",
            Some(&reader),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(standing["attested"], false);
    let (status, _, journal) = hub
        .send(
            Method::GET,
            "/v1/registries/services/journal",
            Some(&reader),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(journal.to_string().contains("token added"));
    // Not for registries the token may not use.
    let (status, _, _) = hub
        .send(
            Method::GET,
            "/v1/registries/secrets/audit",
            Some(&reader),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pages_sorted_by_a_decimal_follow_its_numbers_and_end() {
    let hub = hub(HttpOptions::default()).await;
    let token = hub.token("reader", &["services"], Role::Reader, None);
    let services = hub.replica.registry("services").unwrap();
    let weights = [
        "9.5", "10", "100.25", "-3", "0.001", "42", "7", "7.25", "1000", "2",
    ];
    for (i, w) in weights.iter().enumerate() {
        services
            .put(
                None,
                [("name", format!("w{i}")), ("weight", (*w).to_owned())],
            )
            .unwrap();
    }
    for i in 0..3 {
        services.put(None, [("name", format!("none{i}"))]).unwrap();
    }
    for (sort, descending) in [("weight", false), ("-weight", true)] {
        let mut seen: Vec<Option<f64>> = Vec::new();
        let mut cursor: Option<String> = None;
        for round in 0.. {
            assert!(round < 20, "the listing never ended ({sort})");
            let path = match &cursor {
                Some(c) => {
                    format!("/v1/registries/services/records?limit=4&sort={sort}&cursor={c}")
                }
                None => format!("/v1/registries/services/records?limit=4&sort={sort}"),
            };
            let (status, _, page) = hub.send(Method::GET, &path, Some(&token), None, None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            for r in page["records"].as_array().unwrap() {
                seen.push(r["fields"]["weight"].as_str().map(|w| w.parse().unwrap()));
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen.len(), weights.len() + 3, "{sort}: {seen:?}");
        let numbers: Vec<f64> = seen.iter().flatten().copied().collect();
        let mut sorted = numbers.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        if descending {
            sorted.reverse();
        }
        assert_eq!(numbers, sorted, "{sort}");
    }
}

#[tokio::test]
async fn a_token_whose_key_an_admin_removed_sees_nothing_and_its_journal_names_only_its_registry() {
    let hub = hub(HttpOptions::default()).await;
    let both = hub.token("both", &["services", "secrets"], Role::Reader, None);
    let (_, _, journal) = hub
        .send(
            Method::GET,
            "/v1/registries/services/journal",
            Some(&both),
            None,
            None,
        )
        .await;
    let text = journal.to_string();
    assert!(text.contains("token added"), "{text}");
    assert!(
        !text.contains("secrets"),
        "another registry's name leaked: {text}"
    );

    let key = hub.replica.token("both").unwrap().key;
    hub.replica
        .registry("services")
        .unwrap()
        .remove_member(key)
        .unwrap();
    let (status, _, _) = hub
        .send(
            Method::GET,
            "/v1/registries/services/records",
            Some(&both),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = hub
        .send(
            Method::GET,
            "/v1/registries/secrets/records",
            Some(&both),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_write_is_never_cut_short_by_the_request_timeout() {
    // A limit no write can meet: a write still runs to its end and says it
    // was made (before, it was answered 503 and committed anyway, so a
    // client that retried wrote twice).
    let hub = hub(HttpOptions {
        request_timeout: Duration::from_nanos(1),
        ..HttpOptions::default()
    })
    .await;
    let token = hub.token("ci", &["services"], Role::Writer, None);
    for name in ["billing", "search", "mail"] {
        let (status, _, created) = hub
            .send(
                Method::POST,
                "/v1/registries/services/records",
                Some(&token),
                Some(json!({"fields": {"name": name}})),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    assert_eq!(hub.replica.registry("services").unwrap().len(), 3);
}
