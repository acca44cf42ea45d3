//! The audit log end to end: through replicas, their stores and exchange.

use automerge::ChangeHash;

use super::*;
use crate::document::Role;
use crate::identity::PublicKey;
use crate::schema::{FieldDef, FieldKind, Schema};
use crate::value::Value;
use crate::{Registry, Replica};

fn schema() -> Schema {
    Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("port", FieldKind::Integer))
        .field(FieldDef::new("notes", FieldKind::LongText))
        .field(FieldDef::new("tags", FieldKind::MultiSelect).options(["a", "b", "c"]))
}

struct Setup {
    dir: tempfile::TempDir,
    a: Replica,
    b: Replica,
    ra: Registry,
    rb: Registry,
}

/// Alice creates `services`, makes Bob a writer named "bob" and creates
/// `svc`; Bob edits `svc` and creates `web`; Alice deletes `web`,
/// clears `svc.port`, adds a field and makes Bob a reader.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let a = Replica::open(dir.path().join("a.db")).unwrap();
    let b = Replica::open(dir.path().join("b.db")).unwrap();
    let ra = a.create_registry("services", schema()).unwrap();
    ra.set_member(b.public_key(), Role::Writer).unwrap();
    ra.set_alias(b.public_key(), Some("bob")).unwrap();
    ra.put(
        Some("svc"),
        [
            ("name", Value::from("svc")),
            ("port", 80.into()),
            ("notes", "hello".into()),
            ("tags", ["a"].into()),
        ],
    )
    .unwrap();
    b.import(ra.export(&[]).unwrap()).unwrap();
    let rb = b.registry("services").unwrap();
    rb.put(Some("svc"), [("port", 81)]).unwrap();
    rb.put(Some("svc"), [("notes", "hello world")]).unwrap();
    rb.put(Some("svc"), [("tags", Value::from(["a", "b"]))])
        .unwrap();
    rb.put(Some("web"), [("name", "web")]).unwrap();
    a.import(rb.export(&ra.heads()).unwrap()).unwrap();
    ra.delete("web").unwrap();
    ra.unset("svc", ["port"]).unwrap();
    ra.set_schema(schema().field(FieldDef::new("owner", FieldKind::Text)))
        .unwrap();
    ra.set_member(b.public_key(), Role::Reader).unwrap();
    Setup { dir, a, b, ra, rb }
}

fn field_set(record: &str, field: &str, old: Option<Value>, new: Option<Value>) -> AuditEffect {
    AuditEffect::FieldSet {
        record: record.into(),
        field: field.into(),
        old,
        new,
    }
}

fn sql(s: &Setup, statement: &str, hash: &ChangeHash) {
    let conn = rusqlite::Connection::open(s.dir.path().join("a.db")).unwrap();
    let n = conn.execute(statement, [&hash.0[..]]).unwrap();
    assert_eq!(n, 1, "{statement}");
}

#[test]
fn every_change_is_listed_with_author_alias_signature_and_effects() {
    let s = setup();
    let (alice, bob) = (s.a.public_key(), s.b.public_key());
    let log = s.ra.audit(&AuditFilter::all()).unwrap();
    assert_eq!(log.len(), s.ra.change_count());
    assert!(log.windows(2).all(|w| w[0].position < w[1].position));
    assert!(log.iter().all(|e| e.signature == SignatureStatus::Valid));
    for e in &log {
        let alias = (e.author == bob).then(|| "bob".to_owned());
        assert_eq!(e.alias, alias, "{e:?}");
    }
    let by: Vec<PublicKey> = log.iter().map(|e| e.author).collect();
    let (a, b) = (alice, bob);
    assert_eq!(by, [a, a, a, a, b, b, b, b, a, a, a, a]);

    let genesis = &log[0].effects;
    assert_eq!(
        genesis[0],
        AuditEffect::RegistryCreated {
            name: "services".into()
        }
    );
    assert!(genesis.contains(&AuditEffect::SchemaChanged {
        field: Some("port".into()),
        detail: "added (integer)".into()
    }));
    assert!(genesis.contains(&AuditEffect::MemberChanged {
        key: alice,
        old: None,
        new: Some(Role::Admin)
    }));

    let effects: Vec<&[AuditEffect]> = log.iter().map(|e| e.effects.as_slice()).collect();
    let text = |t: &str| Some(Value::from(t));
    assert_eq!(
        effects[1..],
        [
            &[AuditEffect::MemberChanged {
                key: bob,
                old: None,
                new: Some(Role::Writer)
            }][..],
            &[AuditEffect::AliasChanged {
                key: bob,
                old: None,
                new: Some("bob".into())
            }],
            &[
                AuditEffect::RecordCreated {
                    record: "svc".into()
                },
                field_set("svc", "name", None, text("svc")),
                field_set("svc", "notes", None, text("hello")),
                field_set("svc", "port", None, Some(80.into())),
                field_set("svc", "tags", None, Some(["a"].into())),
            ],
            &[field_set("svc", "port", Some(80.into()), Some(81.into()))],
            &[field_set(
                "svc",
                "notes",
                text("hello"),
                text("hello world")
            )],
            &[field_set(
                "svc",
                "tags",
                Some(["a"].into()),
                Some(["a", "b"].into())
            )],
            &[
                AuditEffect::RecordCreated {
                    record: "web".into()
                },
                field_set("web", "name", None, text("web")),
            ],
            &[AuditEffect::RecordDeleted {
                record: "web".into()
            }],
            &[field_set("svc", "port", Some(81.into()), None)],
            &[AuditEffect::SchemaChanged {
                field: Some("owner".into()),
                detail: "added (text)".into()
            }],
            &[AuditEffect::MemberChanged {
                key: bob,
                old: Some(Role::Writer),
                new: Some(Role::Reader)
            }],
        ]
    );
    assert_eq!(log[4].effects[0].to_string(), "svc.port 80 → 81");
    assert_eq!(log[3].effects[0].to_string(), "created svc");
    assert_eq!(log[8].effects[0].to_string(), "deleted web");
    assert_eq!(log[9].effects[0].to_string(), "svc.port 81 → (none)");
    assert_eq!(log[4].message.as_deref(), Some("write"));
}

#[test]
fn filters_by_record_author_and_time() {
    let s = setup();
    let bob = s.b.public_key();
    let all = s.ra.audit(&AuditFilter::all()).unwrap();

    let web = s.ra.audit(&AuditFilter::all().record("web")).unwrap();
    let kinds: Vec<String> = web.iter().map(|e| e.effects[0].to_string()).collect();
    assert_eq!(kinds, ["created web", "deleted web"]);
    assert!(
        web.iter()
            .flat_map(|e| &e.effects)
            .all(|f| f.record() == Some("web"))
    );

    let bobs = s.ra.audit(&AuditFilter::all().author(bob)).unwrap();
    assert_eq!(bobs.len(), 4);
    assert!(bobs.iter().all(|e| e.author == bob));
    let bobs_svc =
        s.ra.audit(&AuditFilter::all().author(bob).record("svc"))
            .unwrap();
    assert_eq!(bobs_svc.len(), 3);

    // Hybrid-logical-clock times grow along this causal chain.
    assert!(all.windows(2).all(|w| w[0].time < w[1].time));
    let t = all[5].time;
    let since = s.ra.audit(&AuditFilter::all().since(t)).unwrap();
    let until = s.ra.audit(&AuditFilter::all().until(t)).unwrap();
    assert_eq!(since, all[5..]);
    assert_eq!(until, all[..5]);
    let one =
        s.ra.audit(&AuditFilter::all().since(t).until(t + 1))
            .unwrap();
    assert_eq!(one, all[5..6]);
}

#[test]
fn compaction_reopening_and_the_other_replica_tell_the_same_history() {
    let s = setup();
    let before = s.ra.audit(&AuditFilter::all()).unwrap();
    s.ra.compact().unwrap();
    assert_eq!(s.ra.audit(&AuditFilter::all()).unwrap(), before);
    let path = s.a.path().to_owned();
    let reopened = Replica::open(&path).unwrap();
    let again = reopened.registry("services").unwrap();
    assert_eq!(again.audit(&AuditFilter::all()).unwrap(), before);

    // Bob's replica accepted the changes in another order, so its
    // positions differ, but each change did the same there.
    s.b.import(s.ra.export(&s.rb.heads()).unwrap()).unwrap();
    let theirs = s.rb.audit(&AuditFilter::all()).unwrap();
    let key = |e: &AuditEntry| (e.change, e.author, e.alias.clone(), e.effects.clone());
    let mut ours: Vec<_> = before.iter().map(key).collect();
    let mut bobs: Vec<_> = theirs.iter().map(key).collect();
    ours.sort_by_key(|k| k.0);
    bobs.sort_by_key(|k| k.0);
    assert_eq!(ours, bobs);
    assert!(theirs.windows(2).all(|w| w[0].position < w[1].position));
}

#[test]
fn altered_or_removed_signatures_are_flagged_per_change() {
    let s = setup();
    let log = s.ra.audit(&AuditFilter::all()).unwrap();
    // Bob's port write gets the signature of his next change.
    let stolen = s.ra.export(&[]).unwrap();
    let next = stolen
        .changes()
        .iter()
        .find(|c| c.hash() == log[5].change)
        .unwrap()
        .signature()
        .to_vec();
    let conn = rusqlite::Connection::open(s.dir.path().join("a.db")).unwrap();
    conn.execute(
        "UPDATE changes SET signature = ?1 WHERE hash = ?2",
        rusqlite::params![next, &log[4].change.0[..]],
    )
    .unwrap();
    // Alice's delete claims Bob as its author.
    conn.execute(
        "UPDATE changes SET author_key = ?1 WHERE hash = ?2",
        rusqlite::params![&s.b.public_key().as_bytes()[..], &log[8].change.0[..]],
    )
    .unwrap();
    sql(
        &s,
        "UPDATE changes SET signature = x'' WHERE hash = ?1",
        &log[9].change,
    );
    sql(&s, "DELETE FROM changes WHERE hash = ?1", &log[10].change);

    let now = s.ra.audit(&AuditFilter::all()).unwrap();
    assert_eq!(now.len(), log.len());
    let status = |h: &ChangeHash| now.iter().find(|e| e.change == *h).unwrap().signature;
    use SignatureStatus::*;
    let statuses: Vec<SignatureStatus> = log.iter().map(|e| status(&e.change)).collect();
    assert_eq!(
        statuses,
        [
            Valid, Valid, Valid, Valid, Invalid, Valid, Valid, Valid, Invalid, Missing, Missing,
            Valid
        ]
    );
    // The change with no row comes first, at position 0, still saying what it did.
    assert_eq!(now[0].position, 0);
    assert_eq!(now[0].change, log[10].change);
    assert_eq!(now[0].effects, log[10].effects);
    // What each change did does not depend on its signature.
    let effects = |e: &AuditEntry| e.effects.clone();
    assert_eq!(
        now.iter().find(|e| e.change == log[4].change).map(effects),
        Some(log[4].effects.clone())
    );
}

#[test]
fn concurrent_writes_each_show_their_own_before_and_after() {
    let s = setup();
    s.b.import(s.ra.export(&s.rb.heads()).unwrap()).unwrap();
    // Bob is a reader now; Alice makes him a writer again first.
    s.ra.set_member(s.b.public_key(), Role::Writer).unwrap();
    s.b.import(s.ra.export(&s.rb.heads()).unwrap()).unwrap();
    s.ra.put(Some("svc"), [("port", 90)]).unwrap();
    s.rb.put(Some("svc"), [("port", 91)]).unwrap();
    s.a.import(s.rb.export(&s.ra.heads()).unwrap()).unwrap();
    s.ra.put(Some("svc"), [("port", 92)]).unwrap();

    let svc = s.ra.audit(&AuditFilter::all().record("svc")).unwrap();
    let last: Vec<&AuditEffect> = svc[svc.len() - 3..].iter().map(|e| &e.effects[0]).collect();
    assert_eq!(last[0], &field_set("svc", "port", None, Some(90.into())));
    assert_eq!(last[1], &field_set("svc", "port", None, Some(91.into())));
    let AuditEffect::FieldSet { old, new, .. } = last[2] else {
        panic!("{last:?}")
    };
    assert!(matches!(old, Some(Value::Integer(90 | 91))), "{old:?}");
    assert_eq!(new, &Some(Value::Integer(92)));
}

#[test]
fn entries_export_as_json_lines() {
    let s = setup();
    let log = s.ra.audit(&AuditFilter::all().record("svc")).unwrap();
    let mut out = Vec::new();
    export_jsonl(&log, &mut out).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), log.len());
    let port = &lines[1];
    assert_eq!(port["position"], log[1].position);
    assert_eq!(port["author"], s.b.public_key().to_string());
    assert_eq!(port["alias"], "bob");
    assert_eq!(port["signature"], "valid");
    assert_eq!(
        port["effects"],
        serde_json::json!([{ "kind": "field_set", "record": "svc", "field": "port", "old": 80, "new": 81 }])
    );
    assert!(port["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[2]["effects"][0]["new"], "hello world");
    assert_eq!(lines[3]["effects"][0]["new"], serde_json::json!(["a", "b"]));
}
