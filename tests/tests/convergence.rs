//! Property: three replicas making random edits and exchanging bundles in
//! a random order end identical once everyone has heard from everyone.

mod common;

use std::collections::BTreeSet;

use chittysync::{
    ConflictPolicy, FieldDef, FieldKind, Query, Registry, Replica, Role, Schema, Value,
};
use common::{observe, replica};
use proptest::prelude::*;

const FIELDS: [&str; 4] = ["name", "n", "tags", "notes"];

fn schema(policy: ConflictPolicy) -> Schema {
    Schema::new()
        .field(FieldDef::new("name", FieldKind::Text))
        .field(FieldDef::new("n", FieldKind::Integer))
        .field(FieldDef::new("tags", FieldKind::MultiSelect).options(["a", "b", "c"]))
        .field(FieldDef::new("notes", FieldKind::LongText))
        .conflict_policy(policy)
}

#[derive(Clone, Debug)]
enum Op {
    /// Replica `at` creates a record.
    Create { at: usize, name: u8, n: i64 },
    /// Replica `at` sets one field of one of the records it sees.
    Update {
        at: usize,
        pick: prop::sample::Index,
        field: usize,
        val: u8,
    },
    /// Replica `at` clears one field.
    Unset {
        at: usize,
        pick: prop::sample::Index,
        field: usize,
    },
    /// Replica `at` deletes a record.
    Delete {
        at: usize,
        pick: prop::sample::Index,
    },
    /// Replica `to` imports what it lacks of replica `from`.
    Exchange { from: usize, to: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let at = 0..3usize;
    prop_oneof![
        3 => (at.clone(), any::<u8>(), -3i64..3).prop_map(|(at, name, n)| Op::Create { at, name, n }),
        5 => (at.clone(), any::<prop::sample::Index>(), 0..4usize, any::<u8>())
            .prop_map(|(at, pick, field, val)| Op::Update { at, pick, field, val }),
        1 => (at.clone(), any::<prop::sample::Index>(), 0..4usize)
            .prop_map(|(at, pick, field)| Op::Unset { at, pick, field }),
        1 => (at.clone(), any::<prop::sample::Index>()).prop_map(|(at, pick)| Op::Delete { at, pick }),
        3 => (at, 1..3usize).prop_map(|(from, step)| Op::Exchange { from, to: (from + step) % 3 }),
    ]
}

fn policy() -> impl Strategy<Value = ConflictPolicy> {
    prop_oneof![
        Just(ConflictPolicy::Automerge),
        Just(ConflictPolicy::LastWriteWins),
        Just(ConflictPolicy::Hash),
        Just(ConflictPolicy::Manual),
    ]
}

fn exchange(regs: &[Registry], replicas: &[Replica], from: usize, to: usize) {
    let bundle = regs[from].export(&regs[to].heads()).unwrap();
    replicas[to].import(bundle).unwrap();
}

/// The value replica-local `record` gets for `field` from `val`.
fn value_for(record: &chittysync::Record, field: usize, val: u8) -> Value {
    match FIELDS[field] {
        "name" => Value::from(format!("v{}", val % 6)),
        "n" => Value::Integer(i64::from(val % 10)),
        "tags" => Value::Set(
            ["a", "b", "c"]
                .iter()
                .enumerate()
                .filter(|(i, _)| val & (1 << i) != 0)
                .map(|(_, t)| t.to_string())
                .collect(),
        ),
        _ => {
            // Insert one character somewhere in the current notes, so
            // concurrent edits exercise the character-wise merge.
            let mut chars: Vec<char> = record
                .get("notes")
                .map(|v| v.to_string())
                .unwrap_or_default()
                .chars()
                .collect();
            let at = usize::from(val) % (chars.len() + 1);
            chars.insert(at, char::from(b'a' + val % 26));
            Value::from(chars.into_iter().collect::<String>())
        }
    }
}

fn run(policy: ConflictPolicy, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let replicas: Vec<Replica> = ["a", "b", "c"]
        .iter()
        .map(|n| replica(dir.path(), n))
        .collect();
    let ra = replicas[0]
        .create_registry("registry", schema(policy))
        .unwrap();
    for r in &replicas[1..] {
        ra.set_member(r.public_key(), Role::Writer).unwrap();
    }
    for r in &replicas[1..] {
        r.import(ra.export(&[]).unwrap()).unwrap();
    }
    let regs: Vec<Registry> = replicas
        .iter()
        .map(|r| r.registry_by_id(ra.id()).unwrap())
        .collect();

    let mut created = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    for op in ops {
        match op {
            Op::Create { at, name, n } => {
                let id = regs[at]
                    .put(
                        None,
                        [
                            ("name", Value::from(format!("v{}", name % 6))),
                            ("n", Value::Integer(n)),
                        ],
                    )
                    .unwrap();
                created.insert(id);
            }
            Op::Update {
                at,
                pick,
                field,
                val,
            } => {
                let live = regs[at].list(&Query::all());
                if live.is_empty() {
                    continue;
                }
                let record = pick.get(&live);
                let value = value_for(record, field, val);
                regs[at]
                    .put(Some(&record.id), [(FIELDS[field], value)])
                    .unwrap();
            }
            Op::Unset { at, pick, field } => {
                let live = regs[at].list(&Query::all());
                if live.is_empty() {
                    continue;
                }
                regs[at]
                    .unset(&pick.get(&live).id, [FIELDS[field]])
                    .unwrap();
            }
            Op::Delete { at, pick } => {
                let live = regs[at].list(&Query::all());
                if live.is_empty() {
                    continue;
                }
                let id = pick.get(&live).id.clone();
                regs[at].delete(&id).unwrap();
                deleted.insert(id);
            }
            Op::Exchange { from, to } => exchange(&regs, &replicas, from, to),
        }
    }

    // Everyone hears from everyone: after this round each replica has all.
    for from in 0..3 {
        for to in 0..3 {
            if from != to {
                exchange(&regs, &replicas, from, to);
            }
        }
    }

    let first = observe(&regs[0]);
    for reg in &regs[1..] {
        prop_assert_eq!(&first, &observe(reg));
    }
    // Nothing acknowledged was lost, nothing appeared from nowhere, and
    // every delete stuck.
    let ids: BTreeSet<String> = first.records.iter().map(|r| r.id.clone()).collect();
    prop_assert_eq!(&ids, &created);
    for r in &first.records {
        prop_assert_eq!(r.deleted.is_some(), deleted.contains(&r.id), "{}", r.id);
    }
    for c in &first.conflicts {
        prop_assert!(c.candidates.len() >= 2);
        prop_assert_eq!(c.chosen.is_none(), c.policy == ConflictPolicy::Manual);
    }
    // And the store holds what memory shows.
    let reopened = Replica::open(replicas[2].path()).unwrap();
    prop_assert_eq!(&first, &observe(&reopened.registry_by_id(ra.id()).unwrap()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn replicas_converge_after_random_edits_and_exchanges(
        policy in policy(),
        ops in prop::collection::vec(op(), 1..=30),
    ) {
        run(policy, ops)?;
    }
}
