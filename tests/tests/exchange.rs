//! Replicas exchanging signed bundles: convergence, minimal exports,
//! idempotence, refusals, schema changes, conflicts and validation.

mod common;

use std::path::Path;

use chittysync::{
    Bundle, ConflictPolicy, FieldDef, FieldKind, ImportError, Query, Registry, Replica, Role, Rule,
    Schema, Value, WriteError,
};
use common::{observe, replica, send_file};
use tempfile::TempDir;

fn services_schema() -> Schema {
    Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("port", FieldKind::Integer).range(Some(1.0), Some(65535.0)))
        .field(FieldDef::new("owner", FieldKind::Email))
        .field(FieldDef::new("tier", FieldKind::Select).options(["gold", "silver"]))
}

/// Replica A creates `services` and makes B a writer; B gets it via a file.
struct Pair {
    dir: TempDir,
    a: Replica,
    b: Replica,
    ra: Registry,
    rb: Registry,
}

fn pair(schema: Schema) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), "a");
    let b = replica(dir.path(), "b");
    let ra = a.create_registry("services", schema).unwrap();
    ra.set_member(b.public_key(), Role::Writer).unwrap();
    let report = send_file(&ra, &b, dir.path());
    assert!(report.created);
    let rb = b.registry("services").unwrap();
    Pair { dir, a, b, ra, rb }
}

impl Pair {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Both directions, through files.
    fn exchange(&self) {
        send_file(&self.ra, &self.b, self.path());
        send_file(&self.rb, &self.a, self.path());
    }

    fn assert_converged(&self) {
        assert_eq!(observe(&self.ra), observe(&self.rb));
    }
}

fn text(s: &str) -> Option<Value> {
    Some(Value::from(s))
}

#[test]
fn offline_edits_on_both_sides_converge_through_bundle_files() {
    let p = pair(services_schema());
    let billing =
        p.ra.put(None, [("name", "billing"), ("port", "8080")])
            .unwrap();
    let search = p.ra.put(None, [("name", "search")]).unwrap();
    send_file(&p.ra, &p.b, p.path());

    // Both work offline.
    let mail = p.ra.put(None, [("name", "mail")]).unwrap();
    p.ra.put(Some(&billing), [("port", "9090")]).unwrap();
    let auth = p.rb.put(None, [("name", "auth")]).unwrap();
    p.rb.put(Some(&search), [("owner", "ops@example.com")])
        .unwrap();
    p.rb.delete(&billing).unwrap();
    assert_ne!(p.ra.heads(), p.rb.heads());

    // A → B: A cannot know B's new heads, but B applies exactly A's two
    // new changes and recognises the rest.
    let to_b = p.ra.export(&p.rb.heads()).unwrap();
    let path = common::bundle_path(p.path());
    to_b.write_file(&path).unwrap();
    let report = p.b.import_file(&path).unwrap();
    assert_eq!(report.applied, 2);
    assert_eq!(report.already_known, to_b.len() - 2);
    assert!(!report.created);

    // B → A: B now knows A's heads, so it sends only its own three changes.
    let to_a = p.rb.export(&p.ra.heads()).unwrap();
    assert_eq!(to_a.len(), 3);
    let path = common::bundle_path(p.path());
    to_a.write_file(&path).unwrap();
    let report = p.a.import_file(&path).unwrap();
    assert_eq!((report.applied, report.already_known), (3, 0));

    p.assert_converged();
    for reg in [&p.ra, &p.rb] {
        let live: Vec<String> = reg.list(&Query::all()).into_iter().map(|r| r.id).collect();
        let mut expected = vec![search.clone(), mail.clone(), auth.clone()];
        expected.sort();
        assert_eq!(live, expected);
        let b = reg.get(&billing).unwrap();
        let tomb = b.deleted.clone().expect("billing is deleted everywhere");
        assert_eq!(tomb.by, p.b.public_key().to_string());
        // A's concurrent edit of the deleted record is kept, not lost.
        assert_eq!(b.get("port"), Some(&Value::Integer(9090)));
        assert_eq!(
            reg.get(&search).unwrap().get("owner"),
            Some(&Value::from("ops@example.com"))
        );
    }
}

#[test]
fn three_replicas_converge_whatever_the_exchange_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let a = replica(path, "a");
    let b = replica(path, "b");
    let c = replica(path, "c");
    let ra = a.create_registry("services", services_schema()).unwrap();
    ra.set_member(b.public_key(), Role::Writer).unwrap();
    ra.set_member(c.public_key(), Role::Writer).unwrap();
    let shared = ra.put(None, [("name", "shared")]).unwrap();
    send_file(&ra, &b, path);
    send_file(&ra, &c, path);
    let rb = b.registry("services").unwrap();
    let rc = c.registry_by_id(ra.id()).unwrap();

    let mut ids = vec![shared.clone()];
    for (i, reg) in [&ra, &rb, &rc].into_iter().enumerate() {
        for j in 0..3 {
            ids.push(reg.put(None, [("name", format!("r{i}-{j}"))]).unwrap());
        }
    }
    ra.put(Some(&shared), [("port", "1")]).unwrap();
    rb.put(Some(&shared), [("owner", "b@example.com")]).unwrap();
    rc.put(Some(&shared), [("tier", "gold")]).unwrap();

    // A ring, then once more to carry C's and A's changes onward.
    send_file(&ra, &b, path);
    send_file(&rb, &c, path);
    send_file(&rc, &a, path);
    send_file(&ra, &b, path);

    let oa = observe(&ra);
    assert_eq!(oa, observe(&rb));
    assert_eq!(oa, observe(&rc));
    ids.sort();
    let live: Vec<String> = ra.list(&Query::all()).into_iter().map(|r| r.id).collect();
    assert_eq!(live, ids);
    let s = ra.get(&shared).unwrap();
    assert_eq!(s.get("port"), Some(&Value::Integer(1)));
    assert_eq!(s.get("owner"), text("b@example.com").as_ref());
    assert_eq!(s.get("tier"), text("gold").as_ref());
    assert!(ra.conflicts().is_empty());
}

#[test]
fn export_from_the_other_sides_heads_carries_only_what_it_lacks() {
    let p = pair(services_schema());
    // B already has the genesis and the membership change.
    assert_eq!(p.ra.export(&p.rb.heads()).unwrap().len(), 0);
    assert_eq!(p.ra.export(&[]).unwrap().len(), p.ra.change_count());

    let id = p.ra.put(None, [("name", "x")]).unwrap();
    p.ra.put(Some(&id), [("port", "80")]).unwrap();
    p.ra.put(None, [("name", "y")]).unwrap();
    let bundle = p.ra.export(&p.rb.heads()).unwrap();
    assert_eq!(bundle.len(), 3);
    let exported: Vec<_> = bundle.changes().iter().map(|c| c.hash()).collect();
    assert!(exported.iter().all(|h| !p.rb.heads().contains(h)));
    assert!(
        bundle
            .changes()
            .iter()
            .all(|c| c.author() == p.a.public_key())
    );
    let report = p.b.import(bundle).unwrap();
    assert_eq!((report.applied, report.already_known), (3, 0));
    p.assert_converged();

    // Nothing left to send; an empty bundle imports as a no-op.
    let empty = p.ra.export(&p.rb.heads()).unwrap();
    assert!(empty.is_empty());
    let report = p.b.import(empty).unwrap();
    assert_eq!((report.applied, report.already_known), (0, 0));
    p.assert_converged();
}

#[test]
fn importing_the_same_bundle_twice_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), "a");
    let b = replica(dir.path(), "b");
    let ra = a.create_registry("services", services_schema()).unwrap();
    ra.put(None, [("name", "billing")]).unwrap();
    ra.put(None, [("name", "search")]).unwrap();
    let path = common::bundle_path(dir.path());
    ra.export(&[]).unwrap().write_file(&path).unwrap();

    let first = b.import_file(&path).unwrap();
    assert!(first.created);
    assert_eq!((first.applied, first.already_known), (3, 0));
    assert_eq!(first.name, "services");
    assert_eq!(first.registry, ra.id());
    let rb = b.registry("services").unwrap();
    let before = observe(&rb);

    let second = b.import_file(&path).unwrap();
    assert!(!second.created);
    assert_eq!((second.applied, second.already_known), (0, 3));
    assert_eq!(observe(&rb), before);
    assert_eq!(observe(&rb), observe(&ra));
    assert_eq!(b.registries().unwrap().len(), 1);
}

#[test]
fn a_bundle_without_genesis_for_an_unknown_registry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), "a");
    let c = replica(dir.path(), "c");
    let ra = a.create_registry("services", services_schema()).unwrap();
    let after_genesis = ra.heads();
    ra.put(None, [("name", "billing")]).unwrap();

    let bundle = ra.export(&after_genesis).unwrap();
    assert_eq!(bundle.len(), 1);
    match c.import(bundle) {
        Err(ImportError::UnknownRegistry { registry }) => {
            assert_eq!(registry, ra.id().to_string())
        }
        other => panic!("expected UnknownRegistry, got {other:?}"),
    }
    assert!(c.registries().unwrap().is_empty());
    assert!(c.registry_by_id(ra.id()).is_err());
    // The full history still imports afterwards.
    c.import(ra.export(&[]).unwrap()).unwrap();
    assert_eq!(observe(&c.registry_by_id(ra.id()).unwrap()), observe(&ra));
}

#[test]
fn a_bundle_with_missing_dependencies_is_refused_and_changes_nothing() {
    let p = pair(services_schema());
    let first = p.ra.put(None, [("name", "first")]).unwrap();
    let after_first = p.ra.heads();
    p.ra.put(None, [("name", "second")]).unwrap();
    p.ra.put(Some(&first), [("port", "1")]).unwrap();
    let before = observe(&p.rb);

    // Carries the last two changes but not the one they build on.
    let bundle = p.ra.export(&after_first).unwrap();
    assert_eq!(bundle.len(), 2);
    match p.b.import(bundle) {
        Err(ImportError::MissingDependencies { registry, missing }) => {
            assert_eq!(registry, p.ra.id().to_string());
            assert_eq!(missing, vec![after_first[0].to_string()]);
        }
        other => panic!("expected MissingDependencies, got {other:?}"),
    }
    assert_eq!(observe(&p.rb), before);
    // Reopening shows nothing was stored either.
    let reopened = Replica::open(p.b.path()).unwrap();
    assert_eq!(
        observe(&reopened.registry("services").unwrap()).digest,
        before.digest
    );

    let report = send_file(&p.ra, &p.b, p.path());
    assert_eq!(report.applied, 3);
    p.assert_converged();
}

fn assert_not_permitted(err: WriteError, role: Option<&str>, needed: &str) {
    match &err {
        WriteError::NotPermitted {
            registry,
            role: r,
            needed: n,
            ..
        } => {
            assert_eq!(registry, "services");
            assert_eq!(r.as_deref(), role, "{err}");
            assert_eq!(n, needed, "{err}");
        }
        other => panic!("expected NotPermitted, got {other:?}"),
    }
}

#[test]
fn readers_and_non_members_cannot_write_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), "a");
    let reader = replica(dir.path(), "reader");
    let outsider = replica(dir.path(), "outsider");
    let ra = a.create_registry("services", services_schema()).unwrap();
    ra.set_member(reader.public_key(), Role::Reader).unwrap();
    let id = ra.put(None, [("name", "billing")]).unwrap();
    send_file(&ra, &reader, dir.path());
    send_file(&ra, &outsider, dir.path());

    for (who, role) in [(&reader, Some("reader")), (&outsider, None)] {
        let reg = who.registry("services").unwrap();
        let before = observe(&reg);
        // Anyone holding the registry can read it…
        assert_eq!(reg.get(&id).unwrap().get("name"), text("billing").as_ref());
        // …but only writers write.
        assert_not_permitted(reg.put(None, [("name", "x")]).unwrap_err(), role, "writer");
        assert_not_permitted(
            reg.put(Some(&id), [("port", "1")]).unwrap_err(),
            role,
            "writer",
        );
        assert_not_permitted(reg.delete(&id).unwrap_err(), role, "writer");
        assert_not_permitted(
            reg.set_member(who.public_key(), Role::Admin).unwrap_err(),
            role,
            "admin",
        );
        assert_eq!(observe(&reg), before);
        assert!(reg.export(&ra.heads()).unwrap().is_empty());
    }
}

#[test]
fn writers_cannot_change_members_or_schema() {
    let p = pair(services_schema());
    let outsider = replica(p.path(), "outsider");
    let before = observe(&p.rb);
    assert_not_permitted(
        p.rb.set_member(outsider.public_key(), Role::Writer)
            .unwrap_err(),
        Some("writer"),
        "admin",
    );
    assert_not_permitted(
        p.rb.remove_member(p.a.public_key()).unwrap_err(),
        Some("writer"),
        "admin",
    );
    let wider = services_schema().field(FieldDef::new("notes", FieldKind::Text));
    assert_not_permitted(p.rb.set_schema(wider).unwrap_err(), Some("writer"), "admin");
    assert_eq!(observe(&p.rb), before);
    // The admin's view did not move either.
    assert!(p.ra.export(&before.heads).unwrap().is_empty());
}

#[test]
fn a_removed_writer_cannot_write_once_it_has_seen_the_removal() {
    let p = pair(services_schema());
    let by_b = p.rb.put(None, [("name", "from-b")]).unwrap();
    send_file(&p.rb, &p.a, p.path());
    p.ra.remove_member(p.b.public_key()).unwrap();
    send_file(&p.ra, &p.b, p.path());
    p.assert_converged();

    assert!(p.rb.members().iter().all(|m| m.key != p.b.public_key()));
    let before = observe(&p.rb);
    assert_not_permitted(p.rb.put(None, [("name", "x")]).unwrap_err(), None, "writer");
    assert_eq!(observe(&p.rb), before);
    // What B wrote while it was a writer stays.
    assert!(p.ra.get(&by_b).is_some());
}

#[test]
fn a_writers_change_concurrent_with_their_removal_converges_in_any_arrival_order() {
    // Corner case of revocation: W writes while (concurrently) the admin
    // removes W. Replicas receive the two in opposite orders; whatever the
    // verdict on W's change, they must end up identical.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let a = replica(path, "a");
    let w = replica(path, "w");
    let p = replica(path, "p");
    let q = replica(path, "q");
    let ra = a.create_registry("services", services_schema()).unwrap();
    ra.set_member(w.public_key(), Role::Writer).unwrap();
    ra.set_member(p.public_key(), Role::Reader).unwrap();
    ra.set_member(q.public_key(), Role::Reader).unwrap();
    for r in [&w, &p, &q] {
        send_file(&ra, r, path);
    }
    let rw = w.registry("services").unwrap();
    let base = ra.heads();

    rw.put(None, [("name", "written-while-being-removed")])
        .unwrap();
    ra.remove_member(w.public_key()).unwrap();
    let removal = ra.export(&base).unwrap();
    let write = rw.export(&base).unwrap();
    assert_eq!((removal.len(), write.len()), (1, 1));

    let removal_bytes = removal.to_bytes();
    let write_bytes = write.to_bytes();
    let rp = p.registry("services").unwrap();
    let rq = q.registry("services").unwrap();
    let outcome_p = (
        p.import(Bundle::from_bytes(&removal_bytes).unwrap())
            .is_ok(),
        p.import(Bundle::from_bytes(&write_bytes).unwrap()).is_ok(),
    );
    let outcome_q = (
        q.import(Bundle::from_bytes(&write_bytes).unwrap()).is_ok(),
        q.import(Bundle::from_bytes(&removal_bytes).unwrap())
            .is_ok(),
    );
    // The removal is an admin's change, and W was a writer as of the
    // history its change builds on: neither can be refused on its own.
    assert!(
        outcome_p.0 && outcome_q.0 && outcome_q.1,
        "{outcome_p:?} {outcome_q:?}"
    );
    // Whatever P decided about W's change once it knew of the removal,
    // P and Q must not diverge.
    assert_eq!(observe(&rp), observe(&rq));
}

#[test]
fn schema_changes_add_fields_and_options_and_replicate() {
    let p = pair(services_schema());
    let id =
        p.ra.put(None, [("name", "billing"), ("tier", "gold")])
            .unwrap();
    send_file(&p.ra, &p.b, p.path());

    // Before the change reaches B, B cannot use the new option or field.
    let refused = p.rb.put(Some(&id), [("tier", "bronze")]).unwrap_err();
    assert!(
        matches!(&refused, WriteError::Invalid(e) if matches!(e.rule, Rule::Options { .. })),
        "{refused}"
    );

    let mut wider =
        services_schema().field(FieldDef::new("region", FieldKind::Select).options(["eu", "us"]));
    wider.fields[3] =
        FieldDef::new("tier", FieldKind::Select).options(["gold", "silver", "bronze"]);
    p.ra.set_schema(wider.clone()).unwrap();
    assert_eq!(p.ra.schema(), wider);
    send_file(&p.ra, &p.b, p.path());
    assert_eq!(p.rb.schema(), wider);

    p.rb.put(Some(&id), [("tier", "bronze"), ("region", "eu")])
        .unwrap();
    send_file(&p.rb, &p.a, p.path());
    p.assert_converged();
    let r = p.ra.get(&id).unwrap();
    assert_eq!(r.get("tier"), text("bronze").as_ref());
    assert_eq!(r.get("region"), text("eu").as_ref());

    // Reopened from disk, B still has the new schema.
    let reopened = Replica::open(p.b.path()).unwrap();
    assert_eq!(reopened.registry("services").unwrap().schema(), wider);
}

#[test]
fn schema_changes_that_live_records_would_break_are_refused() {
    let p = pair(services_schema());
    let billing =
        p.ra.put(None, [("name", "billing"), ("tier", "silver")])
            .unwrap();
    let before = observe(&p.ra);

    // A required field that existing records lack.
    let required = services_schema().field(FieldDef::new("team", FieldKind::Text).required());
    match p.ra.set_schema(required.clone()).unwrap_err() {
        WriteError::Invalid(e) => {
            assert_eq!(e.registry, "services");
            assert_eq!(e.record, billing);
            assert_eq!(e.field, "team");
            assert_eq!(e.rule, Rule::Required);
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(observe(&p.ra), before);

    // Dropping an option a record uses.
    let mut narrower = services_schema();
    narrower.fields[3] = FieldDef::new("tier", FieldKind::Select).options(["gold"]);
    match p.ra.set_schema(narrower).unwrap_err() {
        WriteError::Invalid(e) => {
            assert_eq!((e.field.as_str(), e.value.as_str()), ("tier", "silver"));
            assert!(matches!(e.rule, Rule::Options { .. }));
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    // Changing a field's type.
    let mut retyped = services_schema();
    retyped.fields[1] = FieldDef::new("port", FieldKind::Text);
    assert!(matches!(
        p.ra.set_schema(retyped).unwrap_err(),
        WriteError::Schema(_)
    ));
    assert_eq!(observe(&p.ra), before);

    // Once every record has the field, the same change is accepted.
    p.ra.put(Some(&billing), [("team", "payments")])
        .unwrap_err();
    let optional = services_schema().field(FieldDef::new("team", FieldKind::Text));
    p.ra.set_schema(optional).unwrap();
    p.ra.put(Some(&billing), [("team", "payments")]).unwrap();
    p.ra.set_schema(required.clone()).unwrap();
    assert_eq!(p.ra.schema(), required);
    p.exchange();
    p.assert_converged();
}

/// A registry with one record that A and B then both hold; returns its id.
fn pair_with_record(schema: Schema) -> (Pair, String) {
    let p = pair(schema);
    let id = p.ra.put(Some("svc"), [("name", "svc")]).unwrap();
    send_file(&p.ra, &p.b, p.path());
    (p, id)
}

#[test]
fn concurrent_writes_to_one_field_are_a_conflict_listed_identically_on_both() {
    let (p, id) = pair_with_record(services_schema());
    p.ra.put(Some(&id), [("owner", "a@example.com")]).unwrap();
    p.rb.put(Some(&id), [("owner", "b@example.com")]).unwrap();
    assert!(p.ra.conflicts().is_empty() && p.rb.conflicts().is_empty());
    p.exchange();
    p.assert_converged();

    let conflicts = p.ra.conflicts();
    assert_eq!(conflicts, p.rb.conflicts());
    assert_eq!(conflicts.len(), 1);
    let c = &conflicts[0];
    assert_eq!((c.record.as_str(), c.field.as_str()), ("svc", "owner"));
    assert_eq!(c.policy, ConflictPolicy::Automerge);
    let mut values: Vec<String> = c.candidates.iter().map(|c| c.value.to_string()).collect();
    values.sort();
    assert_eq!(values, ["a@example.com", "b@example.com"]);
    let mut authors: Vec<_> = c.candidates.iter().map(|c| c.author).collect();
    authors.sort();
    let mut expected = vec![Some(p.a.public_key()), Some(p.b.public_key())];
    expected.sort();
    assert_eq!(authors, expected);
    let chosen = &c.candidates[c.chosen.expect("automerge picks a winner")];
    for reg in [&p.ra, &p.rb] {
        let r = reg.get(&id).unwrap();
        assert!(r.conflicted.contains("owner"));
        assert_eq!(r.get("owner"), Some(&chosen.value));
    }
}

#[test]
fn last_write_wins_picks_the_later_write_on_both_replicas() {
    let schema = services_schema()
        .field(FieldDef::new("x", FieldKind::Text))
        .field(FieldDef::new("y", FieldKind::Text))
        .conflict_policy(ConflictPolicy::LastWriteWins);
    let (p, id) = pair_with_record(schema);
    // Field x: A first, then B. Field y: B first, then A. Whoever writes
    // later must win, whatever their keys. The pauses only make sure the
    // clocks have moved on between the two writes.
    let pause = || std::thread::sleep(std::time::Duration::from_millis(30));
    p.ra.put(Some(&id), [("x", "a-early")]).unwrap();
    pause();
    p.rb.put(Some(&id), [("x", "b-late")]).unwrap();
    p.rb.put(Some(&id), [("y", "b-early")]).unwrap();
    pause();
    p.ra.put(Some(&id), [("y", "a-late")]).unwrap();
    p.exchange();
    p.assert_converged();

    for reg in [&p.ra, &p.rb] {
        let r = reg.get(&id).unwrap();
        assert_eq!(r.get("x"), text("b-late").as_ref());
        assert_eq!(r.get("y"), text("a-late").as_ref());
        let conflicts = reg.conflicts();
        assert_eq!(conflicts.len(), 2);
        for c in conflicts {
            assert_eq!(c.policy, ConflictPolicy::LastWriteWins);
            let chosen = &c.candidates[c.chosen.unwrap()];
            assert!(chosen.value.to_string().ends_with("-late"));
            assert!(c.candidates.iter().all(|o| o.time <= chosen.time));
        }
    }
}

#[test]
fn hash_policy_picks_by_value_alone_identically_on_both_replicas() {
    let schema = services_schema()
        .field(FieldDef::new("x", FieldKind::Text).conflict_policy(ConflictPolicy::Hash))
        .field(FieldDef::new("y", FieldKind::Text).conflict_policy(ConflictPolicy::Hash));
    let (p, id) = pair_with_record(schema);
    // The same two values, written by opposite sides on x and y: a policy
    // that looks only at the values picks the same value for both fields.
    p.ra.put(Some(&id), [("x", "alpha"), ("y", "omega")])
        .unwrap();
    p.rb.put(Some(&id), [("x", "omega"), ("y", "alpha")])
        .unwrap();
    p.exchange();
    p.assert_converged();

    let ra = p.ra.get(&id).unwrap();
    assert_eq!(ra.get("x"), ra.get("y"));
    assert_eq!(ra, p.rb.get(&id).unwrap());
    for c in p.ra.conflicts() {
        assert_eq!(c.policy, ConflictPolicy::Hash);
        assert!(c.chosen.is_some());
    }
    assert_eq!(p.ra.conflicts(), p.rb.conflicts());
}

#[test]
fn manual_conflicts_stay_open_until_resolved_then_clear_everywhere() {
    let schema = services_schema()
        .field(FieldDef::new("team", FieldKind::Text).conflict_policy(ConflictPolicy::Manual));
    let (p, id) = pair_with_record(schema);
    p.ra.put(
        Some(&id),
        [("team", "payments"), ("owner", "a@example.com")],
    )
    .unwrap();
    p.rb.put(Some(&id), [("team", "billing"), ("owner", "b@example.com")])
        .unwrap();
    p.exchange();
    p.assert_converged();

    for reg in [&p.ra, &p.rb] {
        let conflicts = reg.conflicts();
        assert_eq!(conflicts.len(), 2);
        let team = conflicts.iter().find(|c| c.field == "team").unwrap();
        assert_eq!(team.policy, ConflictPolicy::Manual);
        assert_eq!(team.chosen, None);
        // The registry-wide policy still settles the other field.
        let owner = conflicts.iter().find(|c| c.field == "owner").unwrap();
        assert_eq!(owner.policy, ConflictPolicy::Automerge);
        assert!(owner.chosen.is_some());
        let r = reg.get(&id).unwrap();
        assert!(r.conflicted.contains("team") && r.conflicted.contains("owner"));
    }

    p.rb.resolve(&id, "team", "platform").unwrap();
    p.ra.resolve(&id, "owner", "a@example.com").unwrap();
    // Until the resolutions travel, each side still sees the other conflict.
    assert_eq!(p.ra.conflicts().len(), 1);
    assert_eq!(p.rb.conflicts().len(), 1);
    p.exchange();
    p.assert_converged();
    for reg in [&p.ra, &p.rb] {
        assert!(reg.conflicts().is_empty());
        let r = reg.get(&id).unwrap();
        assert!(r.conflicted.is_empty());
        assert_eq!(r.get("team"), text("platform").as_ref());
        assert_eq!(r.get("owner"), text("a@example.com").as_ref());
    }
}

#[test]
fn conflicting_long_text_and_multi_select_values_are_cleared_by_resolve() {
    // A record that predates its long-text and multi-select fields has no
    // shared container for them, so two first writes conflict whole.
    let base = services_schema();
    let p = pair(base.clone().conflict_policy(ConflictPolicy::Manual));
    let id = p.ra.put(Some("svc"), [("name", "svc")]).unwrap();
    let wider = base
        .conflict_policy(ConflictPolicy::Manual)
        .field(FieldDef::new("notes", FieldKind::LongText))
        .field(FieldDef::new("tags", FieldKind::MultiSelect).options(["x", "y", "z"]));
    p.ra.set_schema(wider).unwrap();
    send_file(&p.ra, &p.b, p.path());
    p.ra.put(
        Some(&id),
        [
            ("notes", Value::from("from a")),
            ("tags", Value::from(["x"])),
        ],
    )
    .unwrap();
    p.rb.put(
        Some(&id),
        [
            ("notes", Value::from("from b")),
            ("tags", Value::from(["y"])),
        ],
    )
    .unwrap();
    p.exchange();
    p.assert_converged();
    let fields: Vec<String> = p.ra.conflicts().into_iter().map(|c| c.field).collect();
    assert_eq!(fields, ["notes", "tags"]);

    p.ra.resolve(&id, "notes", "merged by hand").unwrap();
    p.ra.resolve(&id, "tags", Value::from(["x", "y"])).unwrap();
    assert!(p.ra.conflicts().is_empty(), "{:?}", p.ra.conflicts());
    p.exchange();
    p.assert_converged();
    for reg in [&p.ra, &p.rb] {
        assert!(reg.conflicts().is_empty());
        let r = reg.get(&id).unwrap();
        assert!(r.conflicted.is_empty());
        assert_eq!(r.get("notes"), text("merged by hand").as_ref());
        assert_eq!(r.get("tags"), Some(&Value::from(["x", "y"])));
    }
    // Once settled, the fields merge edit by edit again.
    p.ra.put(Some(&id), [("notes", "Merged by hand")]).unwrap();
    p.rb.put(Some(&id), [("notes", "merged by hand!")]).unwrap();
    p.ra.put(Some(&id), [("tags", Value::from(["x", "y", "z"]))])
        .unwrap();
    p.rb.put(Some(&id), [("tags", Value::from(["y"]))]).unwrap();
    p.exchange();
    p.assert_converged();
    let r = p.ra.get(&id).unwrap();
    assert_eq!(r.get("notes"), text("Merged by hand!").as_ref());
    assert_eq!(r.get("tags"), Some(&Value::from(["y", "z"])));
    assert!(r.conflicted.is_empty());
}

#[test]
fn concurrent_creation_of_the_same_record_id_keeps_both_sides_fields() {
    let p = pair(services_schema());
    p.ra.put(
        Some("svc"),
        [("name", Value::from("svc")), ("port", Value::Integer(80))],
    )
    .unwrap();
    p.rb.put(Some("svc"), [("name", "svc"), ("owner", "bob@example.com")])
        .unwrap();
    p.exchange();
    p.assert_converged();
    for reg in [&p.ra, &p.rb] {
        let r = reg.get("svc").unwrap();
        // Both sides' fields survive; the equal names are no conflict.
        assert_eq!(r.get("port"), Some(&Value::Integer(80)), "{r:?}");
        assert_eq!(r.get("owner"), text("bob@example.com").as_ref(), "{r:?}");
        assert!(reg.conflicts().is_empty());
        assert_eq!(reg.len(), 1);
    }
    // A later write and a delete reach the merged record as a whole.
    p.ra.put(Some("svc"), [("port", Value::Integer(81))])
        .unwrap();
    assert_eq!(
        p.ra.get("svc").unwrap().get("port"),
        Some(&Value::Integer(81))
    );
    assert!(p.ra.get("svc").unwrap().conflicted.is_empty());
    p.ra.delete("svc").unwrap();
    assert_eq!(p.ra.len(), 0);
    assert!(p.ra.get("svc").unwrap().deleted.is_some());
}

#[test]
fn concurrent_edits_to_different_fields_of_one_record_both_survive() {
    let (p, id) = pair_with_record(services_schema());
    p.ra.put(Some(&id), [("port", "8443")]).unwrap();
    p.rb.put(Some(&id), [("owner", "ops@example.com"), ("tier", "gold")])
        .unwrap();
    p.exchange();
    p.assert_converged();
    let r = p.ra.get(&id).unwrap();
    assert_eq!(r.get("name"), text("svc").as_ref());
    assert_eq!(r.get("port"), Some(&Value::Integer(8443)));
    assert_eq!(r.get("owner"), text("ops@example.com").as_ref());
    assert_eq!(r.get("tier"), text("gold").as_ref());
    assert!(r.conflicted.is_empty());
    assert!(p.ra.conflicts().is_empty());
}

#[test]
fn concurrent_long_text_edits_at_different_places_merge_character_wise() {
    let schema = services_schema().field(FieldDef::new("notes", FieldKind::LongText));
    let p = pair(schema);
    let id =
        p.ra.put(None, [("name", "svc"), ("notes", "the quick fox jumps")])
            .unwrap();
    send_file(&p.ra, &p.b, p.path());

    p.ra.put(Some(&id), [("notes", "The quick fox jumps")])
        .unwrap();
    p.ra.put(Some(&id), [("notes", "The quick brown fox jumps")])
        .unwrap();
    p.rb.put(Some(&id), [("notes", "the quick fox jumps high!")])
        .unwrap();
    p.exchange();
    p.assert_converged();
    for reg in [&p.ra, &p.rb] {
        let r = reg.get(&id).unwrap();
        assert_eq!(
            r.get("notes"),
            text("The quick brown fox jumps high!").as_ref()
        );
        assert!(r.conflicted.is_empty());
    }
}

#[test]
fn concurrent_multi_select_add_and_remove_of_different_options_both_apply() {
    let schema = services_schema()
        .field(FieldDef::new("tags", FieldKind::MultiSelect).options(["a", "b", "c", "d"]));
    let p = pair(schema);
    let id =
        p.ra.put(
            None,
            [
                ("name", Value::from("svc")),
                ("tags", Value::from(["a", "b"])),
            ],
        )
        .unwrap();
    send_file(&p.ra, &p.b, p.path());

    p.ra.put(Some(&id), [("tags", Value::from(["a", "b", "c"]))])
        .unwrap();
    p.rb.put(Some(&id), [("tags", Value::from(["a"]))]).unwrap();
    p.exchange();
    p.assert_converged();
    let r = p.rb.get(&id).unwrap();
    assert_eq!(r.get("tags"), Some(&Value::from(["a", "c"])));
    assert!(r.conflicted.is_empty());
}

#[test]
fn multi_select_add_wins_over_a_concurrent_remove_of_the_same_option() {
    let schema = services_schema()
        .field(FieldDef::new("tags", FieldKind::MultiSelect).options(["a", "b", "c"]));
    let p = pair(schema);
    let one =
        p.ra.put(
            None,
            [
                ("name", Value::from("one")),
                ("tags", Value::from(["a", "b"])),
            ],
        )
        .unwrap();
    let two =
        p.ra.put(
            None,
            [("name", Value::from("two")), ("tags", Value::from(["a"]))],
        )
        .unwrap();
    send_file(&p.ra, &p.b, p.path());

    // Record one: A removes b; B, concurrently, removes b and adds it back.
    p.ra.put(Some(&one), [("tags", Value::from(["a"]))])
        .unwrap();
    p.rb.put(Some(&one), [("tags", Value::from(["a"]))])
        .unwrap();
    p.rb.put(Some(&one), [("tags", Value::from(["a", "b"]))])
        .unwrap();
    // Record two: both add c; A then removes it, never having seen B's add.
    p.ra.put(Some(&two), [("tags", Value::from(["a", "c"]))])
        .unwrap();
    p.ra.put(Some(&two), [("tags", Value::from(["a"]))])
        .unwrap();
    p.rb.put(Some(&two), [("tags", Value::from(["a", "c"]))])
        .unwrap();
    p.exchange();
    p.assert_converged();
    for reg in [&p.ra, &p.rb] {
        assert_eq!(
            reg.get(&one).unwrap().get("tags"),
            Some(&Value::from(["a", "b"]))
        );
        assert_eq!(
            reg.get(&two).unwrap().get("tags"),
            Some(&Value::from(["a", "c"]))
        );
    }
}

#[test]
fn an_invalid_local_write_names_the_problem_and_writes_nothing() {
    let p = pair(
        services_schema().field(
            FieldDef::new("code", FieldKind::Text)
                .unique()
                .pattern("[a-z]+"),
        ),
    );
    let id =
        p.ra.put(Some("billing"), [("name", "billing"), ("code", "bil")])
            .unwrap();
    let before = observe(&p.ra);

    // (record, fields written, field named, value named, rule named)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str, Rule);
    let cases: Vec<Case<'_>> = vec![
        (
            &id,
            vec![("port", "99999")],
            "port",
            "99999",
            Rule::Max(65535.0),
        ),
        (&id, vec![("port", "0")], "port", "0", Rule::Min(1.0)),
        (
            &id,
            vec![("tier", "bronze")],
            "tier",
            "bronze",
            Rule::Options {
                allowed: vec!["gold".into(), "silver".into()],
            },
        ),
        (
            &id,
            vec![("code", "BIL")],
            "code",
            "BIL",
            Rule::Pattern("[a-z]+".into()),
        ),
        (
            &id,
            vec![("colour", "red")],
            "colour",
            "red",
            Rule::UnknownField,
        ),
        ("search", vec![("port", "80")], "name", "", Rule::Required),
        (
            "search",
            vec![("name", "search"), ("code", "bil")],
            "code",
            "bil",
            Rule::Unique {
                other_record: id.clone(),
            },
        ),
    ];
    for (record, fields, field, value, rule) in cases {
        let err = p.ra.put(Some(record), fields).unwrap_err();
        let WriteError::Invalid(e) = &err else {
            panic!("expected Invalid, got {err:?}");
        };
        assert_eq!(e.registry, "services", "{err}");
        assert_eq!(e.record, record, "{err}");
        assert_eq!(e.field, field, "{err}");
        assert_eq!(e.value, value, "{err}");
        assert_eq!(e.rule, rule, "{err}");
        let message = err.to_string();
        for part in ["services", record, field, value] {
            assert!(message.contains(part), "'{part}' missing from: {message}");
        }
        assert_eq!(observe(&p.ra), before);
    }

    // A type error, and an unset of a required field.
    let err = p.ra.put(Some(&id), [("port", "eighty")]).unwrap_err();
    assert!(
        matches!(&err, WriteError::Invalid(e) if matches!(e.rule, Rule::Type { expected: FieldKind::Integer, .. }))
    );
    let err = p.ra.unset(&id, ["name"]).unwrap_err();
    assert!(
        matches!(&err, WriteError::Invalid(e) if e.rule == Rule::Required && e.field == "name")
    );

    // A batch whose second write is invalid leaves no trace of the first.
    let err =
        p.ra.write(|w| {
            w.put(Some("new-one"), [("name", "fine")])?;
            w.put(Some(&id), [("port", "-1")])?;
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, WriteError::Invalid(_)));
    assert!(p.ra.get("new-one").is_none());
    assert_eq!(observe(&p.ra), before);

    // Nothing leaked to disk or to a peer either.
    assert!(p.ra.export(&p.rb.heads()).unwrap().len() == 1);
    let reopened = Replica::open(p.a.path()).unwrap();
    assert_eq!(observe(&reopened.registry("services").unwrap()), before);
}

#[test]
fn registries_of_one_name_from_different_replicas_are_told_apart_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), "a");
    let b = replica(dir.path(), "b");
    let c = replica(dir.path(), "c");
    let ra = a.create_registry("services", services_schema()).unwrap();
    let rc = c.create_registry("services", Schema::new()).unwrap();
    assert_ne!(ra.id(), rc.id());
    assert!(matches!(
        a.create_registry("services", Schema::new()),
        Err(WriteError::Schema(_))
    ));
    ra.put(None, [("name", "billing")]).unwrap();
    send_file(&ra, &b, dir.path());
    send_file(&rc, &b, dir.path());

    assert_eq!(b.registries().unwrap().len(), 2);
    match b.registry("services") {
        Err(chittysync::LookupError::Ambiguous { name, mut ids }) => {
            assert_eq!(name, "services");
            ids.sort();
            let mut expected = vec![ra.id().to_string(), rc.id().to_string()];
            expected.sort();
            assert_eq!(ids, expected);
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    let by_id = b.registry(&ra.id().to_string()).unwrap();
    assert_eq!(observe(&by_id), observe(&ra));
    assert_eq!(observe(&b.registry_by_id(rc.id()).unwrap()), observe(&rc));
}
