//! The emulator over real HTTP, as an adapter sees it.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::Notion;
use crate::{Fault, Running};

const TOKEN: &str = "secret_test_token";
const VERSION: &str = "2025-09-03";
/// 2026-11-23T10:15:00Z.
const T0: i64 = 1_795_428_900_000;

struct Api {
    notion: Notion,
    running: Running,
    client: reqwest::Client,
}

struct Reply {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

impl Api {
    async fn start() -> Api {
        let notion = Notion::new();
        notion.add_token(TOKEN);
        // Most tests are not about the rate limit.
        notion.control().set_limit("rate_per_sec", 1e9);
        notion.control().set_limit("rate_burst", 1e9);
        let running = notion.start().await.expect("start the emulator");
        Api {
            notion,
            running,
            client: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
        version: Option<&str>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.running.base_url()));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(v) = version {
            request = request.header("Notion-Version", v);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.expect("request reaches the emulator");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            body,
            retry_after,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.send(method, path, body, Some(TOKEN), Some(VERSION))
            .await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let reply = self.call(method.clone(), path, body).await;
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.body);
        reply.body
    }

    async fn query(&self, ds: &str, body: Value) -> Reply {
        self.call(
            Method::POST,
            &format!("/v1/data_sources/{ds}/query"),
            Some(body),
        )
        .await
    }

    async fn create(&self, ds: &str, properties: Value) -> Reply {
        self.call(
            Method::POST,
            "/v1/pages",
            Some(json!({ "parent": { "data_source_id": ds }, "properties": properties })),
        )
        .await
    }
}

/// Builds a property value of a given size.
type MakeValue<'a> = Box<dyn Fn(usize) -> Value + 'a>;

fn schema() -> Value {
    json!({
        "Name": { "title": {} },
        "Notes": { "rich_text": {} },
        "Port": { "number": {} },
        "Active": { "checkbox": {} },
        "Tier": { "select": { "options": [{ "name": "gold" }] } },
        "Tags": { "multi_select": { "options": [] } },
        "Stage": { "status": { "options": [{ "name": "Todo" }, { "name": "Done" }] } },
        "When": { "date": {} },
        "Link": { "url": {} },
        "Mail": { "email": {} },
        "Phone": { "phone_number": {} },
        "Owners": { "people": {} },
        "Refs": { "relation": { "data_source_id": "x", "type": "single_property", "single_property": {} } },
        "Score": { "formula": { "expression": "1" } },
        "Created": { "created_time": {} },
    })
}

fn title(s: &str) -> Value {
    json!({ "title": [{ "text": { "content": s } }] })
}

fn one_source(api: &Api) -> String {
    let (_, ds) = api
        .notion
        .create_database("Services", vec![("Services", schema())]);
    ds[0].clone()
}

fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.body["object"], "error", "{}", reply.body);
    assert_eq!(reply.body["status"], status, "{}", reply.body);
    assert_eq!(reply.body["code"], code, "{}", reply.body);
    assert!(reply.body["request_id"].is_string(), "{}", reply.body);
    assert!(reply.body["message"].is_string(), "{}", reply.body);
}

#[tokio::test]
async fn auth_version_and_request_errors() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let path = format!("/v1/data_sources/{ds}");

    let none = api
        .send(Method::GET, &path, None, None, Some(VERSION))
        .await;
    assert_error(&none, 401, "unauthorized");
    let wrong = api
        .send(Method::GET, &path, None, Some("other"), Some(VERSION))
        .await;
    assert_error(&wrong, 401, "unauthorized");
    assert!(!wrong.body.to_string().contains("other\""));

    let unversioned = api.send(Method::GET, &path, None, Some(TOKEN), None).await;
    assert_error(&unversioned, 400, "missing_version");
    let old = api
        .send(Method::GET, &path, None, Some(TOKEN), Some("2022-06-28"))
        .await;
    assert_error(&old, 400, "validation_error");
    assert!(
        old.body["message"].as_str().unwrap().contains("2025-09-03"),
        "{}",
        old.body
    );
    let newer = api
        .send(Method::GET, &path, None, Some(TOKEN), Some("2026-03-11"))
        .await;
    assert_eq!(newer.status, 200);

    let missing = api
        .call(
            Method::GET,
            "/v1/pages/00000000-0000-0000-0000-000000000000",
            None,
        )
        .await;
    assert_error(&missing, 404, "object_not_found");
    let missing_ds = api.query("nope", json!({})).await;
    assert_error(&missing_ds, 404, "object_not_found");

    let bad_json = api
        .client
        .post(format!("{}/v1/pages", api.running.base_url()))
        .bearer_auth(TOKEN)
        .header("Notion-Version", VERSION)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    let bad_json: Value = bad_json.json().await.unwrap();
    assert_eq!(bad_json["code"], "invalid_json");

    let route = api
        .call(Method::GET, "/v1/blocks/x/children/y/z", None)
        .await;
    assert_error(&route, 400, "invalid_request_url");

    let huge = "x".repeat(600 * 1000);
    let big = api
        .create(&ds, json!({ "Name": title("big"), "Notes": { "rich_text": [{ "text": { "content": huge } }] } }))
        .await;
    assert_error(&big, 400, "validation_error");
    assert!(big.body["message"].as_str().unwrap().contains("500 KB"));
    assert!(api.notion.pages(&ds).is_empty());
}

#[tokio::test]
async fn discovery_of_a_database_with_two_data_sources() {
    let api = Api::start().await;
    let (db, sources) = api.notion.create_database(
        "Inventory",
        vec![
            (
                "Hosts",
                json!({ "Name": { "title": {} }, "Port": { "number": {} } }),
            ),
            (
                "Racks",
                json!({ "Label": { "title": {} }, "Floor": { "select": {} } }),
            ),
        ],
    );
    let database = api
        .ok(Method::GET, &format!("/v1/databases/{db}"), None)
        .await;
    assert_eq!(database["object"], "database");
    assert_eq!(database["id"], db.as_str());
    let listed: Vec<(String, String)> = database["data_sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (sources[0].clone(), "Hosts".to_owned()),
            (sources[1].clone(), "Racks".to_owned())
        ]
    );

    let hosts = api
        .ok(
            Method::GET,
            &format!("/v1/data_sources/{}", sources[0]),
            None,
        )
        .await;
    assert_eq!(hosts["object"], "data_source");
    assert_eq!(hosts["parent"]["type"], "database_id");
    assert_eq!(hosts["parent"]["database_id"], db.as_str());
    assert_eq!(hosts["title"][0]["plain_text"], "Hosts");
    assert_eq!(hosts["properties"]["Name"]["id"], "title");
    assert_eq!(hosts["properties"]["Name"]["type"], "title");
    let port_id = hosts["properties"]["Port"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(port_id, "title");
    assert_eq!(hosts["properties"]["Port"]["type"], "number");
    assert_eq!(hosts["properties"]["Port"]["name"], "Port");
    assert!(hosts["properties"]["Port"]["number"].is_object());

    // Add a record-id column and rename one; the renamed keeps its id.
    let patched = api
        .ok(
            Method::PATCH,
            &format!("/v1/data_sources/{}", sources[0]),
            Some(json!({ "properties": {
                "Record id": { "rich_text": {} },
                "Port": { "name": "Listen port" },
            }})),
        )
        .await;
    assert_eq!(patched["properties"]["Listen port"]["id"], port_id.as_str());
    assert!(patched["properties"].get("Port").is_none());
    assert_eq!(patched["properties"]["Record id"]["type"], "rich_text");

    // Another application renames it back; still the same id.
    api.notion
        .rename_property(&sources[0], "Listen port", "Port");
    let hosts = api
        .ok(
            Method::GET,
            &format!("/v1/data_sources/{}", sources[0]),
            None,
        )
        .await;
    assert_eq!(hosts["properties"]["Port"]["id"], port_id.as_str());

    // A write keyed by property id lands in the same column.
    let page = api
        .create(
            &sources[0],
            json!({ "title": title("web"), port_id.clone(): { "number": 443 } }),
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.body["properties"]["Port"]["number"], 443);
    assert_eq!(
        page.body["properties"]["Name"]["title"][0]["plain_text"],
        "web"
    );
    assert_eq!(page.body["parent"]["data_source_id"], sources[0].as_str());
    assert_eq!(page.body["parent"]["database_id"], db.as_str());
    // The other source holds nothing.
    let racks = api.query(&sources[1], json!({})).await;
    assert_eq!(racks.body["results"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn pagination_uses_opaque_cursors_and_checks_page_size() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let mut created = Vec::new();
    for i in 0..25 {
        created.push(api.notion.create_page(
            &ds,
            json!({ "Name": title(&format!("p{i}")), "Port": { "number": i } }),
        ));
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut body = json!({ "page_size": 10 });
        if let Some(c) = &cursor {
            body["start_cursor"] = json!(c);
        }
        let reply = api.query(&ds, body).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["object"], "list");
        assert_eq!(reply.body["type"], "page_or_data_source");
        pages += 1;
        for r in reply.body["results"].as_array().unwrap() {
            assert_eq!(r["object"], "page");
            seen.push(r["id"].as_str().unwrap().to_owned());
        }
        if reply.body["has_more"] == true {
            let next = reply.body["next_cursor"].as_str().unwrap().to_owned();
            assert!(!created.contains(&next), "cursor should be opaque");
            cursor = Some(next);
        } else {
            assert!(reply.body["next_cursor"].is_null());
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "every page once, oldest first");

    for bad in [json!(0), json!(101), json!(-1), json!("ten")] {
        let reply = api.query(&ds, json!({ "page_size": bad })).await;
        assert_error(&reply, 400, "validation_error");
    }
    let reply = api.query(&ds, json!({ "page_size": 100 })).await;
    assert_eq!(reply.body["results"].as_array().unwrap().len(), 25);
    let reply = api
        .query(&ds, json!({ "start_cursor": "not-a-cursor" }))
        .await;
    assert_error(&reply, 400, "validation_error");
}

#[tokio::test]
async fn a_query_past_the_result_cap_is_marked_incomplete() {
    let api = Api::start().await;
    let ds = one_source(&api);
    for i in 0..250 {
        api.notion
            .create_page(&ds, json!({ "Name": title(&format!("p{i}")) }));
    }
    let full = api.query(&ds, json!({ "page_size": 100 })).await;
    assert!(full.body.get("request_status").is_none());
    assert_eq!(full.body["has_more"], true);

    api.notion.control().set_limit("result_cap", 100.0);
    let mut total = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({ "page_size": 30 });
        if let Some(c) = &cursor {
            body["start_cursor"] = json!(c);
        }
        let reply = api.query(&ds, body).await;
        assert_eq!(reply.status, 200);
        total += reply.body["results"].as_array().unwrap().len();
        match reply.body["next_cursor"].as_str() {
            Some(c) => {
                // Only the page that reaches the cap says so.
                assert!(reply.body.get("request_status").is_none(), "{}", reply.body);
                cursor = Some(c.to_owned());
            }
            None => {
                assert_eq!(reply.body["has_more"], false);
                assert_eq!(reply.body["request_status"]["type"], "incomplete");
                assert_eq!(
                    reply.body["request_status"]["incomplete_reason"],
                    "query_result_limit_reached"
                );
                break;
            }
        }
    }
    assert_eq!(total, 100);

    // With `request_status_early`, it comes on the first page only.
    api.notion.control().set_limit("request_status_early", 1.0);
    let first = api.query(&ds, json!({ "page_size": 30 })).await;
    assert_eq!(first.body["request_status"]["type"], "incomplete");
    let mut cursor = first.body["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let reply = api
            .query(&ds, json!({ "page_size": 30, "start_cursor": c }))
            .await;
        assert!(reply.body.get("request_status").is_none(), "{}", reply.body);
        cursor = reply.body["next_cursor"].as_str().map(str::to_owned);
    }
    api.notion.control().set_limit("request_status_early", 0.0);

    // A narrower query is under the cap again.
    let narrow = api
        .query(
            &ds,
            json!({ "filter": { "property": "Name", "title": { "starts_with": "p2" } } }),
        )
        .await;
    assert!(narrow.body.get("request_status").is_none());
    assert_eq!(narrow.body["results"].as_array().unwrap().len(), 61);
}

#[tokio::test]
async fn last_edited_time_is_rounded_down_and_filterable() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let clock = api.notion.control();
    clock.set_time(T0 + 10_000);
    let a = api.notion.create_page(&ds, json!({ "Name": title("a") }));
    clock.set_time(T0 + 50_000);
    let b = api.create(&ds, json!({ "Name": title("b") })).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let page_b = api.ok(Method::GET, &format!("/v1/pages/{b}"), None).await;
    assert_eq!(page_b["last_edited_time"], "2026-11-23T10:15:00.000Z");
    assert_eq!(
        api.notion.page(&a).unwrap()["last_edited_time"],
        page_b["last_edited_time"],
        "two edits in one minute share a timestamp"
    );

    clock.set_time(T0 + 125_000);
    let edited = api
        .ok(
            Method::PATCH,
            &format!("/v1/pages/{a}"),
            Some(json!({ "properties": { "Port": { "number": 1 } } })),
        )
        .await;
    assert_eq!(edited["last_edited_time"], "2026-11-23T10:17:00.000Z");
    assert_eq!(edited["created_time"], "2026-11-23T10:15:00.000Z");

    let ids = |reply: &Reply| -> Vec<String> {
        reply.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let since = |op: &str, at: &str| json!({ "filter": { "timestamp": "last_edited_time", "last_edited_time": { op: at } } });
    let r = api
        .query(&ds, since("on_or_after", "2026-11-23T10:16:00.000Z"))
        .await;
    assert_eq!(ids(&r), vec![a.clone()]);
    let r = api
        .query(&ds, since("on_or_after", "2026-11-23T10:15:00Z"))
        .await;
    assert_eq!(ids(&r), vec![a.clone(), b.clone()]);
    // 10:15:30 is after both edits in that minute, but they read as 10:15:00.
    let r = api.query(&ds, since("after", "2026-11-23T10:15:30Z")).await;
    assert_eq!(ids(&r), vec![a.clone()]);
    let r = api
        .query(&ds, since("before", "2026-11-23T10:16:00Z"))
        .await;
    assert_eq!(ids(&r), vec![b.clone()]);
    let r = api
        .query(
            &ds,
            json!({ "sorts": [{ "timestamp": "last_edited_time", "direction": "descending" }] }),
        )
        .await;
    assert_eq!(ids(&r), vec![a.clone(), b.clone()]);
    // Relative dates are documented values; other words are not.
    let r = api.query(&ds, since("on_or_after", "yesterday")).await;
    assert_eq!(ids(&r).len(), 2, "{}", r.body);
    let r = api.query(&ds, since("on_or_after", "last tuesday")).await;
    assert_error(&r, 400, "validation_error");
}

#[tokio::test]
async fn property_filters_and_compounds() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let web = api.notion.create_page(
        &ds,
        json!({ "Name": title("web"), "Port": { "number": 443 }, "Active": { "checkbox": true },
                "Tier": { "select": { "name": "gold" } } }),
    );
    let db = api.notion.create_page(
        &ds,
        json!({ "Name": title("db"), "Port": { "number": 5432 }, "Notes": { "rich_text": [{ "text": { "content": "primary" } }] } }),
    );
    let names = |reply: &Reply| -> Vec<String> {
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let q = |f: Value| json!({ "filter": f });
    let r = api
        .query(
            &ds,
            q(json!({ "property": "Port", "number": { "equals": 5432 } })),
        )
        .await;
    assert_eq!(names(&r), vec![db.clone()]);
    let r = api
        .query(
            &ds,
            q(json!({ "property": "Notes", "rich_text": { "equals": "primary" } })),
        )
        .await;
    assert_eq!(names(&r), vec![db.clone()]);
    let r = api
        .query(
            &ds,
            q(json!({ "property": "Name", "title": { "equals": "web" } })),
        )
        .await;
    assert_eq!(names(&r), vec![web.clone()]);
    let r = api
        .query(
            &ds,
            q(json!({ "property": "Active", "checkbox": { "equals": false } })),
        )
        .await;
    assert_eq!(names(&r), vec![db.clone()]);
    let r = api
        .query(
            &ds,
            q(json!({ "property": "Tier", "select": { "equals": "gold" } })),
        )
        .await;
    assert_eq!(names(&r), vec![web.clone()]);
    let r = api
        .query(
            &ds,
            q(json!({ "or": [
                { "property": "Tier", "select": { "equals": "gold" } },
                { "and": [
                    { "property": "Port", "number": { "equals": 5432 } },
                    { "property": "Active", "checkbox": { "equals": false } },
                ]},
            ]})),
        )
        .await;
    assert_eq!(names(&r), vec![web.clone(), db.clone()]);
    let r = api
        .query(
            &ds,
            json!({ "sorts": [{ "property": "Port", "direction": "descending" }] }),
        )
        .await;
    assert_eq!(names(&r), vec![db.clone(), web.clone()]);

    let too_deep = q(json!({ "and": [{ "or": [{ "and": [
        { "property": "Port", "number": { "equals": 1 } } ] }] }] }));
    assert_error(&api.query(&ds, too_deep).await, 400, "validation_error");
    let unknown = q(json!({ "property": "Nope", "number": { "equals": 1 } }));
    assert_error(&api.query(&ds, unknown).await, 400, "validation_error");
    let wrong_operand = q(json!({ "property": "Port", "number": { "equals": "1" } }));
    assert_error(
        &api.query(&ds, wrong_operand).await,
        400,
        "validation_error",
    );
}

#[tokio::test]
async fn page_objects_have_the_documented_shapes() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let reply = api
        .create(
            &ds,
            json!({
                "Name": title("web"),
                "Tier": { "select": { "name": "gold" } },
                "When": { "date": { "start": "2026-11-23" } },
                "Link": { "url": "https://example.com" },
                "Owners": { "people": [{ "object": "user", "id": "u1" }] },
            }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let page = &reply.body;
    assert_eq!(page["object"], "page");
    assert_eq!(page["in_trash"], false);
    assert_eq!(page["is_archived"], false);
    assert_eq!(page["parent"]["type"], "data_source_id");
    assert!(page["url"].as_str().unwrap().starts_with("https://"));
    assert_eq!(page["created_by"]["object"], "user");
    let name = &page["properties"]["Name"];
    assert_eq!(name["id"], "title");
    assert_eq!(name["type"], "title");
    assert_eq!(
        name["title"][0],
        json!({
            "type": "text",
            "text": { "content": "web", "link": null },
            "annotations": { "bold": false, "italic": false, "strikethrough": false,
                             "underline": false, "code": false, "color": "default" },
            "plain_text": "web",
            "href": null,
        })
    );
    let tier = &page["properties"]["Tier"]["select"];
    assert_eq!(tier["name"], "gold");
    assert!(tier["id"].is_string() && tier["color"].is_string());
    assert_eq!(
        page["properties"]["When"]["date"],
        json!({ "start": "2026-11-23", "end": null, "time_zone": null })
    );
    assert_eq!(page["properties"]["Port"]["number"], Value::Null);
    assert_eq!(page["properties"]["Active"]["checkbox"], false);
    assert_eq!(page["properties"]["Owners"]["people"][0]["id"], "u1");
    assert_eq!(
        page["properties"]["Created"]["created_time"],
        page["created_time"]
    );

    // Only the keys sent change.
    let id = page["id"].as_str().unwrap();
    let updated = api
        .ok(
            Method::PATCH,
            &format!("/v1/pages/{id}"),
            Some(json!({ "properties": { "Port": { "number": 8080 } } })),
        )
        .await;
    assert_eq!(updated["properties"]["Port"]["number"], 8080);
    assert_eq!(updated["properties"]["Tier"]["select"]["name"], "gold");
    assert_eq!(
        updated["properties"]["Name"]["title"][0]["plain_text"],
        "web"
    );
}

#[tokio::test]
async fn writes_are_validated_like_the_api() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let text = |n: usize| json!({ "rich_text": [{ "text": { "content": "x".repeat(n) } }] });
    let items = |n: usize, item: Value| -> Vec<Value> { vec![item; n] };
    let many_text =
        |n: usize| json!({ "rich_text": items(n, json!({ "text": { "content": "a" } })) });
    let tags = |n: usize| json!({ "multi_select": (0..n).map(|i| json!({ "name": format!("t{i}") })).collect::<Vec<_>>() });
    let target = api
        .notion
        .create_page(&ds, json!({ "Name": title("target") }));
    let refs = |n: usize| json!({ "relation": items(n, json!({ "id": target })) });
    let people = |n: usize| json!({ "people": items(n, json!({ "object": "user", "id": "u" })) });
    let url = |n: usize| json!({ "url": format!("https://{}", "a".repeat(n - 8)) });
    let mail = |n: usize| json!({ "email": format!("{}@x.io", "a".repeat(n - 5)) });
    let phone = |n: usize| json!({ "phone_number": "1".repeat(n) });

    // Each limit: the boundary is accepted, one past it is refused.
    let cases: Vec<(&str, MakeValue, usize)> = vec![
        ("Notes", Box::new(text), 2000),
        ("Notes", Box::new(many_text), 100),
        ("Tags", Box::new(tags), 100),
        ("Refs", Box::new(refs), 100),
        ("Owners", Box::new(people), 100),
        ("Link", Box::new(url), 2000),
        ("Mail", Box::new(mail), 200),
        ("Phone", Box::new(phone), 200),
    ];
    for (prop, make, limit) in &cases {
        let ok = api
            .create(&ds, json!({ "Name": title("ok"), *prop: make(*limit) }))
            .await;
        assert_eq!(ok.status, 200, "{prop} at {limit}: {}", ok.body);
        let over = api
            .create(
                &ds,
                json!({ "Name": title("over"), *prop: make(limit + 1) }),
            )
            .await;
        assert_error(&over, 400, "validation_error");
        let message = over.body["message"].as_str().unwrap();
        assert!(message.contains(&format!("{}", limit + 1)), "{message}");
    }
    let before = api.notion.pages(&ds).len();
    assert_eq!(before, cases.len() + 1); // and the relation target

    let refused = |reply: &Reply, needle: &str| {
        assert_error(reply, 400, "validation_error");
        let message = reply.body["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    };
    let r = api.create(&ds, json!({ "Port": { "number": "x" } })).await;
    assert_eq!(
        r.body["message"],
        "body.properties.Port.number should be a number or `null`, instead was `\"x\"`."
    );
    refused(&r, "number");
    let r = api
        .create(&ds, json!({ "Tier": { "select": { "name": "a,b" } } }))
        .await;
    refused(&r, "commas");
    let r = api
        .create(
            &ds,
            json!({ "Tags": { "multi_select": [{ "name": "ok" }, { "name": "x,y" }] } }),
        )
        .await;
    refused(&r, "commas");
    let r = api
        .create(&ds, json!({ "Stage": { "status": { "name": "Shipped" } } }))
        .await;
    refused(&r, "Shipped");
    let r = api
        .create(&ds, json!({ "Score": { "formula": { "string": "x" } } }))
        .await;
    refused(&r, "formula");
    let r = api
        .create(
            &ds,
            json!({ "Created": { "created_time": "2026-01-01T00:00:00Z" } }),
        )
        .await;
    refused(&r, "created_time");
    let r = api
        .create(&ds, json!({ "Active": { "checkbox": "yes" } }))
        .await;
    refused(&r, "boolean");
    let r = api
        .create(&ds, json!({ "Port": { "rich_text": [] } }))
        .await;
    refused(&r, "Port.number should be defined");
    let r = api
        .create(&ds, json!({ "Colour": { "rich_text": [] } }))
        .await;
    assert_eq!(r.body["message"], "Colour is not a property that exists.");
    let r = api
        .create(&ds, json!({ "When": { "date": { "start": "soon" } } }))
        .await;
    refused(&r, "When.date.start");
    assert_eq!(
        api.notion.pages(&ds).len(),
        before,
        "refused writes change nothing"
    );

    // A status option that exists is fine.
    let r = api
        .create(&ds, json!({ "Stage": { "status": { "name": "Done" } } }))
        .await;
    assert_eq!(r.body["properties"]["Stage"]["status"]["name"], "Done");
}

#[test]
#[should_panic(expected = "commas")]
fn another_applications_invalid_write_panics_with_the_api_error() {
    let notion = Notion::new();
    let (_, ds) = notion.create_database("S", vec![("S", schema())]);
    notion.create_page(&ds[0], json!({ "Tier": { "select": { "name": "a,b" } } }));
}

#[tokio::test]
async fn unknown_select_options_are_created() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let first = api
        .create(
            &ds,
            json!({ "Tier": { "select": { "name": "silver" } },
                             "Tags": { "multi_select": [{ "name": "edge" }, { "name": "eu" }] } }),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let silver = first.body["properties"]["Tier"]["select"].clone();
    assert_eq!(silver["name"], "silver");
    let schema = api
        .ok(Method::GET, &format!("/v1/data_sources/{ds}"), None)
        .await;
    let options: Vec<&str> = schema["properties"]["Tier"]["select"]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(options, vec!["gold", "silver"]);
    let tags = schema["properties"]["Tags"]["multi_select"]["options"]
        .as_array()
        .unwrap();
    assert_eq!(tags.len(), 2);
    // The same name again reuses the option, and an id selects it too.
    let second = api
        .create(&ds, json!({ "Tier": { "select": { "name": "silver" } } }))
        .await;
    assert_eq!(
        second.body["properties"]["Tier"]["select"]["id"],
        silver["id"]
    );
    let by_id = api
        .create(&ds, json!({ "Tier": { "select": { "id": silver["id"] } } }))
        .await;
    assert_eq!(by_id.body["properties"]["Tier"]["select"]["name"], "silver");
}

#[tokio::test]
async fn trashed_pages_leave_queries_unless_asked_for() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let keep = api
        .notion
        .create_page(&ds, json!({ "Name": title("keep") }));
    let gone = api
        .notion
        .create_page(&ds, json!({ "Name": title("gone") }));
    let trashed = api
        .ok(
            Method::PATCH,
            &format!("/v1/pages/{gone}"),
            Some(json!({ "in_trash": true })),
        )
        .await;
    assert_eq!(trashed["in_trash"], true);
    let ids = |reply: Reply| -> Vec<String> {
        reply.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(api.query(&ds, json!({})).await), vec![keep.clone()]);
    assert_eq!(
        ids(api.query(&ds, json!({ "in_trash": true })).await),
        vec![gone.clone()]
    );
    // `archived` is an alias of in_trash only before 2026-03-11.
    let path = format!("/v1/pages/{keep}");
    let alias = Some(json!({ "archived": true }));
    let new = api
        .send(
            Method::PATCH,
            &path,
            alias.clone(),
            Some(TOKEN),
            Some("2026-03-11"),
        )
        .await;
    assert_error(&new, 400, "validation_error");
    assert_eq!(api.notion.pages(&ds).len(), 1);
    let read = api
        .ok(Method::GET, &format!("/v1/pages/{gone}"), None)
        .await;
    assert_eq!(read["in_trash"], true);
    let edit = api
        .call(
            Method::PATCH,
            &format!("/v1/pages/{gone}"),
            Some(json!({ "properties": { "Port": { "number": 1 } } })),
        )
        .await;
    assert_error(&edit, 400, "validation_error");
    // Another application trashes one; restoring brings it back.
    api.notion.trash_page(&keep);
    assert!(api.notion.pages(&ds).is_empty());
    api.ok(
        Method::PATCH,
        &format!("/v1/pages/{gone}"),
        Some(json!({ "in_trash": false })),
    )
    .await;
    assert_eq!(ids(api.query(&ds, json!({})).await), vec![gone]);
}

#[tokio::test]
async fn relations_are_inlined_up_to_the_cap_and_listed_in_full() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let targets: Vec<String> = (0..30)
        .map(|i| {
            api.notion
                .create_page(&ds, json!({ "Name": title(&format!("target-{i:02}")) }))
        })
        .collect();
    let refs: Vec<Value> = targets.iter().map(|t| json!({ "id": t })).collect();
    let id = api.notion.create_page(
        &ds,
        json!({ "Name": title("hub"), "Refs": { "relation": refs } }),
    );
    let page = api.ok(Method::GET, &format!("/v1/pages/{id}"), None).await;
    let refs_prop = &page["properties"]["Refs"];
    assert_eq!(refs_prop["relation"].as_array().unwrap().len(), 25);
    assert_eq!(refs_prop["has_more"], true);
    let prop_id = refs_prop["id"].as_str().unwrap().to_owned();

    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/pages/{id}/properties/{prop_id}?page_size=10");
        if let Some(c) = &cursor {
            path.push_str(&format!("&start_cursor={c}"));
        }
        let list = api.ok(Method::GET, &path, None).await;
        assert_eq!(list["object"], "list");
        assert_eq!(list["type"], "property_item");
        for item in list["results"].as_array().unwrap() {
            assert_eq!(item["object"], "property_item");
            listed.push(item["relation"]["id"].as_str().unwrap().to_owned());
        }
        match list["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, targets);

    api.notion.control().set_limit("relation_inline", 40.0);
    let page = api.ok(Method::GET, &format!("/v1/pages/{id}"), None).await;
    assert_eq!(page["properties"]["Refs"]["has_more"], false);
    assert_eq!(
        page["properties"]["Refs"]["relation"]
            .as_array()
            .unwrap()
            .len(),
        30
    );
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after() {
    let api = Api::start().await;
    let ds = one_source(&api);
    api.notion.add_token("second_token");
    let control = api.notion.control();
    control.set_time(T0);
    control.set_limit("rate_per_sec", 0.5);
    control.set_limit("rate_burst", 2.0);
    let path = format!("/v1/data_sources/{ds}");
    assert_eq!(api.call(Method::GET, &path, None).await.status, 200);
    assert_eq!(api.call(Method::GET, &path, None).await.status, 200);
    let limited = api.call(Method::GET, &path, None).await;
    assert_error(&limited, 429, "rate_limited");
    let wait: u64 = limited
        .retry_after
        .as_deref()
        .expect("Retry-After header")
        .parse()
        .expect("integer seconds");
    assert_eq!(wait, 2);
    assert!(limited.body["additional_data"]["rate_limit_reason"].is_string());
    // Another token has its own budget.
    let other = api
        .send(
            Method::GET,
            &path,
            None,
            Some("second_token"),
            Some(VERSION),
        )
        .await;
    assert_eq!(other.status, 200);
    // After the advertised wait the token may go on.
    control.advance(Duration::from_secs(wait));
    assert_eq!(api.call(Method::GET, &path, None).await.status, 200);
    assert_eq!(api.call(Method::GET, &path, None).await.status, 429);
}

#[tokio::test]
async fn injected_faults_and_the_request_log() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let id = api.notion.create_page(&ds, json!({ "Name": title("a") }));
    let control = api.notion.control();
    control.clear_log();
    control.inject(
        Fault::status(529, json!({ "object": "error", "status": 529, "code": "service_overload", "message": "busy" }))
            .method("PATCH"),
    );
    let path = format!("/v1/pages/{id}");
    let patch = Some(json!({ "properties": { "Port": { "number": 2 } } }));
    let first = api.call(Method::PATCH, &path, patch.clone()).await;
    assert_eq!(first.status, 529);
    assert_eq!(first.body["code"], "service_overload");
    assert_eq!(
        api.notion.page(&id).unwrap()["properties"]["Port"]["number"],
        Value::Null
    );
    let second = api.call(Method::PATCH, &path, patch).await;
    assert_eq!(second.status, 200);
    assert_eq!(
        api.notion.page(&id).unwrap()["properties"]["Port"]["number"],
        2
    );
    api.query(&ds, json!({})).await;

    let log = control.requests();
    let seen: Vec<(String, String, u16)> = log
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.status))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("PATCH".to_owned(), path.clone(), 529),
            ("PATCH".to_owned(), path.clone(), 200),
            (
                "POST".to_owned(),
                format!("/v1/data_sources/{ds}/query"),
                200
            ),
        ]
    );
    assert!(log[1].body.contains("\"number\":2"));
    assert!(!log.iter().any(|r| r.body.contains(TOKEN)));
}

#[tokio::test]
async fn a_cursor_survives_pages_trashed_mid_walk() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let created: Vec<String> = (0..6)
        .map(|i| {
            api.notion
                .create_page(&ds, json!({ "Name": title(&format!("p{i}")) }))
        })
        .collect();
    let first = api.query(&ds, json!({ "page_size": 3 })).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    // Another application trashes a page the walk has already passed.
    api.notion.trash_page(&created[0]);
    let second = api
        .query(&ds, json!({ "page_size": 3, "start_cursor": cursor }))
        .await;
    let ids: Vec<&str> = second.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![&created[3], &created[4], &created[5]]);
    assert_eq!(second.body["has_more"], false);
}

#[test]
fn serves_from_a_thread_of_its_own() {
    let notion = Notion::new();
    notion.add_token(TOKEN);
    let (db, _) = notion.create_database("T", vec![("T", json!({ "Name": { "title": {} } }))]);
    let running = notion.start_thread().expect("start on a thread");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/v1/databases/{db}", running.base_url()))
            .bearer_auth(TOKEN)
            .header("Notion-Version", VERSION)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    assert_eq!(notion.control().requests().len(), 1);
}

#[tokio::test]
async fn text_limits_count_utf16_code_units() {
    let api = Api::start().await;
    let ds = one_source(&api);
    // 1001 emoji are 1001 chars but 2002 UTF-16 code units.
    let emoji = "😀".repeat(1001);
    let reply = api.create(&ds, json!({ "Name": title(&emoji) })).await;
    assert_error(&reply, 400, "validation_error");
    let ok = "😀".repeat(1000);
    assert_eq!(
        api.create(&ds, json!({ "Name": title(&ok) })).await.status,
        200
    );
    let mail = format!("{}@x.io", "é😀".repeat(66));
    let reply = api
        .create(
            &ds,
            json!({ "Name": title("m"), "Mail": { "email": mail } }),
        )
        .await;
    assert_error(&reply, 400, "validation_error");
    let link = format!("https://x.io/{}", "😀".repeat(994));
    let reply = api
        .create(&ds, json!({ "Name": title("u"), "Link": { "url": link } }))
        .await;
    assert_error(&reply, 400, "validation_error");
}

#[tokio::test]
async fn archived_accompanies_in_trash_before_2026_03_11() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let id = api.notion.create_page(&ds, json!({ "Name": title("a") }));
    api.notion.trash_page(&id);
    let old = api.ok(Method::GET, &format!("/v1/pages/{id}"), None).await;
    assert_eq!(old["in_trash"], true);
    assert_eq!(old["archived"], true);
    let source = api
        .ok(Method::GET, &format!("/v1/data_sources/{ds}"), None)
        .await;
    assert_eq!(source["archived"], false);
    let listed = api.query(&ds, json!({ "in_trash": true })).await;
    assert_eq!(listed.body["results"][0]["archived"], true);
    let new = api
        .send(
            Method::GET,
            &format!("/v1/pages/{id}"),
            None,
            Some(TOKEN),
            Some("2026-03-11"),
        )
        .await;
    assert_eq!(new.status, 200);
    assert_eq!(new.body["in_trash"], true);
    assert!(new.body.get("archived").is_none(), "{}", new.body);
}

#[tokio::test]
async fn a_per_minute_budget_answers_429_until_the_window_frees() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let control = api.notion.control();
    control.set_time(T0);
    control.set_limit("rate_per_minute", 3.0);
    let path = format!("/v1/data_sources/{ds}");
    assert_eq!(api.call(Method::GET, &path, None).await.status, 200);
    control.advance(Duration::from_secs(20));
    assert_eq!(api.call(Method::GET, &path, None).await.status, 200);
    assert_eq!(api.call(Method::GET, &path, None).await.status, 200);
    control.advance(Duration::from_secs(10));
    let limited = api.call(Method::GET, &path, None).await;
    assert_error(&limited, 429, "rate_limited");
    // The first request leaves the window 60 s after it was made.
    assert_eq!(limited.retry_after.as_deref(), Some("30"));
    control.advance(Duration::from_secs(30));
    assert_eq!(api.call(Method::GET, &path, None).await.status, 200);
    assert_eq!(api.call(Method::GET, &path, None).await.status, 429);
}

#[tokio::test]
async fn filter_keys_match_the_type_and_bare_dates_cover_the_day() {
    let api = Api::start().await;
    let ds = one_source(&api);
    api.notion.create_page(
        &ds,
        json!({ "Name": title("a"), "Link": { "url": "https://a.io" },
                "When": { "date": { "start": "2026-01-05T18:30:00.000+00:00" } } }),
    );
    for (prop, key) in [
        ("Link", "rich_text"),
        ("Name", "rich_text"),
        ("Notes", "title"),
        ("Mail", "url"),
        ("Phone", "email"),
    ] {
        let reply = api
            .query(
                &ds,
                json!({ "filter": { "property": prop, key: { "is_not_empty": true } } }),
            )
            .await;
        assert_error(&reply, 400, "validation_error");
    }
    let by_url = api
        .query(
            &ds,
            json!({ "filter": { "property": "Link", "url": { "contains": "a.io" } } }),
        )
        .await;
    assert_eq!(by_url.body["results"].as_array().unwrap().len(), 1);
    for (op, operand, hits) in [
        ("on_or_before", "2026-01-05", 1),
        ("before", "2026-01-05", 0),
        ("on_or_after", "2026-01-05", 1),
        ("after", "2026-01-05", 0),
        ("after", "2026-01-04", 1),
        ("equals", "2026-01-05", 1),
        ("on_or_before", "2026-01-05T12:00:00Z", 0),
    ] {
        let reply = api
            .query(
                &ds,
                json!({ "filter": { "property": "When", "date": { op: operand } } }),
            )
            .await;
        assert_eq!(
            reply.body["results"].as_array().unwrap().len(),
            hits,
            "{op} {operand}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn ids_without_dashes_are_accepted_and_returned_dashed() {
    let api = Api::start().await;
    let (db, sources) = api
        .notion
        .create_database("Services", vec![("Services", schema())]);
    let ds = &sources[0];
    let target = api.notion.create_page(ds, json!({ "Name": title("t") }));
    let bare = |id: &str| id.replace('-', "");
    let user = "0f8fad5bd9cb469fa16570867728950e";
    let created = api
        .call(
            Method::POST,
            "/v1/pages",
            Some(
                json!({ "parent": { "data_source_id": bare(ds) }, "properties": {
                "Name": title("p"),
                "Refs": { "relation": [{ "id": bare(&target) }] },
                "Owners": { "people": [{ "id": user }] },
            } }),
            ),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let page = &created.body;
    assert_eq!(page["parent"]["data_source_id"], ds.as_str());
    assert_eq!(
        page["properties"]["Refs"]["relation"][0]["id"],
        target.as_str()
    );
    assert_eq!(
        page["properties"]["Owners"]["people"][0]["id"],
        "0f8fad5b-d9cb-469f-a165-70867728950e"
    );
    let id = page["id"].as_str().unwrap();
    for path in [
        format!("/v1/pages/{}", bare(id)),
        format!("/v1/data_sources/{}", bare(ds)),
        format!("/v1/databases/{}", bare(&db)),
    ] {
        let got = api.ok(Method::GET, &path, None).await;
        assert!(got["id"].as_str().unwrap().contains('-'), "{got}");
    }
    let by_parent_db = api
        .call(
            Method::POST,
            "/v1/pages",
            Some(json!({ "parent": { "database_id": bare(&db) }, "properties": { "Name": title("q") } })),
        )
        .await;
    assert_eq!(by_parent_db.status, 200, "{}", by_parent_db.body);
    let hits = api
        .query(
            ds,
            json!({ "filter": { "property": "Refs", "relation": { "contains": bare(&target) } } }),
        )
        .await;
    assert_eq!(hits.body["results"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn relation_targets_must_exist_in_the_related_source_and_not_be_trashed() {
    let api = Api::start().await;
    let (_, sources) = api.notion.create_database(
        "Two",
        vec![
            ("Targets", json!({ "Name": { "title": {} } })),
            ("Other", json!({ "Name": { "title": {} } })),
        ],
    );
    let (_, linking) = api.notion.create_database(
        "Links",
        vec![(
            "Links",
            json!({ "Name": { "title": {} },
                    "Rel": { "relation": { "data_source_id": sources[0], "type": "single_property", "single_property": {} } } }),
        )],
    );
    let good = api
        .notion
        .create_page(&sources[0], json!({ "Name": title("t") }));
    let elsewhere = api
        .notion
        .create_page(&sources[1], json!({ "Name": title("o") }));
    let trashed = api
        .notion
        .create_page(&sources[0], json!({ "Name": title("x") }));
    api.notion.trash_page(&trashed);
    let missing = "11111111-2222-3333-4444-555555555555".to_owned();
    for bad in [&elsewhere, &trashed, &missing] {
        let reply = api
            .create(
                &linking[0],
                json!({ "Name": title("l"), "Rel": { "relation": [{ "id": bad }] } }),
            )
            .await;
        assert_error(&reply, 400, "validation_error");
        let message = reply.body["message"].as_str().unwrap();
        assert!(
            message.contains("Rel") && message.contains(bad.as_str()),
            "{message}"
        );
    }
    let reply = api
        .create(
            &linking[0],
            json!({ "Name": title("l"), "Rel": { "relation": [{ "id": good }] } }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn people_are_inlined_up_to_25_and_listed_in_full_with_next_url() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let users: Vec<String> = (0..30).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let people: Vec<Value> = users
        .iter()
        .map(|u| json!({ "object": "user", "id": u }))
        .collect();
    let id = api.notion.create_page(
        &ds,
        json!({ "Name": title("team"), "Owners": { "people": people } }),
    );
    let page = api.ok(Method::GET, &format!("/v1/pages/{id}"), None).await;
    let owners = &page["properties"]["Owners"];
    assert_eq!(owners["people"].as_array().unwrap().len(), 25);
    assert_eq!(owners["has_more"], true);
    let prop_id = owners["id"].as_str().unwrap();
    let mut path = format!("/v1/pages/{id}/properties/{prop_id}?page_size=20");
    let mut listed = Vec::new();
    loop {
        let list = api.ok(Method::GET, &path, None).await;
        for item in list["results"].as_array().unwrap() {
            listed.push(item["people"]["id"].as_str().unwrap().to_owned());
        }
        if list["has_more"] == true {
            let next_url = list["property_item"]["next_url"]
                .as_str()
                .expect("next_url");
            let cursor = list["next_cursor"].as_str().unwrap();
            assert!(
                next_url.ends_with(&format!("start_cursor={cursor}")),
                "{next_url}"
            );
            path = next_url
                .strip_prefix(&api.running.base_url())
                .expect("next_url points at the emulator")
                .to_owned();
        } else {
            assert!(list["property_item"]["next_url"].is_null());
            break;
        }
    }
    assert_eq!(listed, users);
}

#[tokio::test]
async fn data_source_option_updates_replace_and_status_is_locked() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let path = format!("/v1/data_sources/{ds}");
    let patch = |body: Value| api.call(Method::PATCH, &path, Some(body));
    let reply = patch(
        json!({ "properties": { "Tier": { "select": { "options": [{ "name": "silver" }] } } } }),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let names: Vec<&str> = reply.body["properties"]["Tier"]["select"]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["silver"], "omitted options are removed");
    for body in [
        json!({ "properties": { "Stage": { "status": { "options": [{ "name": "New" }] } } } }),
        json!({ "properties": { "Stage": { "name": "Phase" } } }),
        json!({ "properties": { "State": { "status": { "options": [{ "name": "A" }] } } } }),
    ] {
        assert_error(&patch(body).await, 400, "validation_error");
    }
    let added = patch(json!({ "properties": { "State": { "status": {} } } })).await;
    assert_eq!(added.status, 200, "{}", added.body);
}

#[tokio::test]
async fn dates_read_back_in_utc_or_at_their_time_zones_offset() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let when = |d: Value| json!({ "Name": title("d"), "When": { "date": d } });
    let read = |reply: &Reply| reply.body["properties"]["When"]["date"].clone();
    let r = api
        .create(
            &ds,
            when(json!({ "start": "2026-11-23T12:15:00+02:00", "end": "2026-11-24" })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = read(&r);
    assert_eq!(d["start"], "2026-11-23T10:15:00.000+00:00");
    assert_eq!(d["end"], "2026-11-24");
    assert!(d["time_zone"].is_null());
    let r = api
        .create(
            &ds,
            when(json!({ "start": "2026-07-01T09:00:00", "time_zone": "America/New_York" })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The zone is kept as its offset on that day (summer, then winter).
    assert_eq!(read(&r)["start"], "2026-07-01T09:00:00.000-04:00");
    assert!(read(&r)["time_zone"].is_null());
    let r = api
        .create(
            &ds,
            when(json!({ "start": "2026-01-15T09:30:00", "end": "2026-01-15T18:00:00", "time_zone": "Europe/Paris" })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(read(&r)["start"], "2026-01-15T09:30:00.000+01:00");
    assert_eq!(read(&r)["end"], "2026-01-15T18:00:00.000+01:00");
    let id = r.body["id"].as_str().unwrap().to_owned();
    let again = api.ok(Method::GET, &format!("/v1/pages/{id}"), None).await;
    assert_eq!(
        again["properties"]["When"]["date"]["start"],
        "2026-01-15T09:30:00.000+01:00"
    );
    // The same instant is what filters compare.
    let found = api
        .query(
            &ds,
            json!({ "filter": { "property": "When", "date": { "equals": "2026-01-15T08:30:00Z" } } }),
        )
        .await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(found.body["results"].as_array().unwrap().len(), 1);
    for bad in [
        json!({ "start": "2026-07-01T09:00:00-04:00", "time_zone": "America/New_York" }),
        json!({ "start": "2026-07-01", "time_zone": "America/New_York" }),
        json!({ "start": "2026-07-01T09:00:00", "time_zone": "Mars/Olympus" }),
    ] {
        assert_error(&api.create(&ds, when(bad)).await, 400, "validation_error");
    }
}

/// `filter_properties` (a query parameter of query and retrieve-page,
/// once per property id) limits the properties returned.
#[tokio::test]
async fn filter_properties_limits_the_properties_returned() {
    let api = Api::start().await;
    let ds = one_source(&api);
    let made = api
        .create(&ds, json!({ "Name": title("a"), "Port": { "number": 80 } }))
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    let page = made.body["id"].as_str().unwrap().to_owned();
    let port_id = made.body["properties"]["Port"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let names = |page: &Value| {
        let mut names: Vec<String> = page["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    };
    let encoded: String = port_id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();

    let reply = api
        .call(
            Method::POST,
            &format!(
                "/v1/data_sources/{ds}/query?filter_properties=title&filter_properties={encoded}"
            ),
            Some(json!({})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(names(&reply.body["results"][0]), ["Name", "Port"]);
    assert_eq!(reply.body["results"][0]["properties"]["Port"]["number"], 80);

    let one = api
        .ok(
            Method::GET,
            &format!("/v1/pages/{page}?filter_properties[]={encoded}"),
            None,
        )
        .await;
    assert_eq!(names(&one), ["Port"]);
    assert_eq!(one["id"], page.as_str());
    let all = api
        .ok(Method::GET, &format!("/v1/pages/{page}"), None)
        .await;
    assert!(names(&all).len() > 10, "{all}");
}

/// Relative date conditions (`past_week` … `next_year`, operand `{}`) and
/// relative date values (`"today"`, `"one_week_ago"`, …) are settled on the
/// emulator's clock, for date properties and timestamps alike.
#[tokio::test]
async fn relative_date_filters_follow_the_clock() {
    let api = Api::start().await;
    // T0 is 2026-11-23T10:15:00Z.
    api.notion.control().set_time(T0);
    let ds = one_source(&api);
    for (name, day) in [
        ("three days ago", "2026-11-20"),
        ("forty days ago", "2026-10-14"),
        ("today", "2026-11-23"),
        ("in three days", "2026-11-26"),
        ("in forty days", "2027-01-02"),
        ("in two years", "2028-11-23"),
    ] {
        let r = api
            .create(
                &ds,
                json!({ "Name": title(name), "When": { "date": { "start": day } } }),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let (api, ds) = (&api, &ds);
    let found = |condition: Value| {
        let body = json!({ "filter": { "property": "When", "date": condition } });
        async move {
            let reply = api.query(ds, body).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            let mut names: Vec<String> = reply.body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    p["properties"]["Name"]["title"][0]["plain_text"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(
        found(json!({ "past_week": {} })).await,
        ["three days ago", "today"]
    );
    assert_eq!(
        found(json!({ "past_month": {} })).await,
        ["three days ago", "today"]
    );
    assert_eq!(
        found(json!({ "past_year": {} })).await,
        ["forty days ago", "three days ago", "today"]
    );
    assert_eq!(
        found(json!({ "next_week": {} })).await,
        ["in three days", "today"]
    );
    assert_eq!(
        found(json!({ "next_year": {} })).await,
        ["in forty days", "in three days", "today"]
    );
    assert_eq!(found(json!({ "equals": "today" })).await, ["today"]);
    assert_eq!(
        found(json!({ "before": "yesterday" })).await,
        ["forty days ago", "three days ago"]
    );
    assert_eq!(
        found(json!({ "on_or_after": "one_week_from_now" })).await,
        ["in forty days", "in two years"]
    );
    assert_eq!(
        found(json!({ "on_or_before": "one_month_ago" })).await,
        ["forty days ago"]
    );

    // Timestamps too: pages created now are in the past week, none next year.
    let timestamp = |condition: Value| json!({ "filter": { "timestamp": "created_time", "created_time": condition } });
    let reply = api.query(ds, timestamp(json!({ "past_week": {} }))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["results"].as_array().unwrap().len(), 6);
    let reply = api
        .query(ds, timestamp(json!({ "on_or_after": "tomorrow" })))
        .await;
    assert_eq!(reply.body["results"].as_array().unwrap().len(), 0);

    for bad in [
        json!({ "past_week": { "days": 3 } }),
        json!({ "past_week": true }),
        json!({ "equals": "fortnight_ago" }),
        json!({ "next_decade": {} }),
    ] {
        let reply = api
            .query(ds, json!({ "filter": { "property": "When", "date": bad } }))
            .await;
        assert_error(&reply, 400, "validation_error");
    }
}
