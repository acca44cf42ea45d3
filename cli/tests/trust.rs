//! Attestations, checkpoints and proofs from the command line.

mod common;

use std::path::Path;

use common::{json, ok};

fn run(replica: &Path, args: &[&str]) -> (i32, String, String) {
    let run = common::chittysync(replica, args);
    (run.code, run.stdout, run.stderr)
}

#[test]
fn two_members_reach_a_quorum_of_two() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let schema = dir.path().join("s.toml");
    std::fs::write(
        &schema,
        "quorum = 2\n[[fields]]\nname = \"name\"\ntype = \"text\"\n",
    )
    .unwrap();
    ok(
        &a,
        &[
            "registry",
            "create",
            "r",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    let bob = ok(&b, &["whoami"]).trim().to_owned();
    ok(&a, &["members", "add", "r", &bob, "--role", "reader"]);
    ok(&a, &["put", "r", "x", "name=x"]);
    ok(&a, &["attest", "r"]);
    let status = json(&a, &["status", "r"]);
    assert_eq!(status["attested_by"].as_array().unwrap().len(), 1);
    assert_eq!(status["attested"], false);

    let bundle = dir.path().join("r.bundle");
    ok(&a, &["export", "r", "--out", bundle.to_str().unwrap()]);
    ok(&b, &["import", bundle.to_str().unwrap()]);
    ok(&b, &["attest", "r"]);
    ok(&b, &["export", "r", "--out", bundle.to_str().unwrap()]);
    ok(&a, &["import", bundle.to_str().unwrap()]);
    let status = json(&a, &["status", "r"]);
    assert_eq!(status["attested"], true, "{status}");
    assert!(ok(&a, &["status", "r"]).contains("met ✓"));
    assert_eq!(json(&b, &["status", "r"])["digest"], status["digest"]);
}

#[test]
fn proofs_verify_with_only_the_public_key_and_tampering_fails() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let schema = dir.path().join("s.toml");
    std::fs::write(&schema, "[[fields]]\nname = \"name\"\ntype = \"text\"\n").unwrap();
    ok(
        &a,
        &[
            "registry",
            "create",
            "r",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    ok(&a, &["put", "r", "x", "name=x"]);
    let key = ok(&a, &["whoami"]).trim().to_owned();
    let change = ok(&a, &["heads", "r"]).trim().to_owned();
    let (c1, c2) = (dir.path().join("c1.note"), dir.path().join("c2.note"));
    ok(&a, &["checkpoint", "--out", c1.to_str().unwrap()]);
    ok(&a, &["put", "r", "y", "name=y"]);
    ok(&a, &["checkpoint", "--out", c2.to_str().unwrap()]);

    let inclusion = dir.path().join("inclusion.json");
    ok(
        &a,
        &[
            "prove",
            "--change",
            &change,
            "--out",
            inclusion.to_str().unwrap(),
        ],
    );
    let consistency = dir.path().join("consistency.json");
    ok(
        &a,
        &[
            "prove",
            "--from",
            c1.to_str().unwrap(),
            "--to",
            c2.to_str().unwrap(),
            "--out",
            consistency.to_str().unwrap(),
        ],
    );

    // The verifier needs no replica: point --replica at nothing.
    let nobody = dir.path().join("nobody.db");
    let out = ok(
        &nobody,
        &[
            "verify-proof",
            inclusion.to_str().unwrap(),
            "--checkpoint",
            c2.to_str().unwrap(),
            "--key",
            &key,
        ],
    );
    assert!(out.contains("included"), "{out}");
    let out = ok(
        &nobody,
        &[
            "verify-proof",
            consistency.to_str().unwrap(),
            "--checkpoint",
            c2.to_str().unwrap(),
            "--old-checkpoint",
            c1.to_str().unwrap(),
            "--key",
            &key,
        ],
    );
    assert!(out.contains("consistent"), "{out}");
    assert!(!nobody.exists(), "verify-proof must not create a replica");

    // A checkpoint signed by someone else, or an altered proof, fails.
    let stranger = ok(&dir.path().join("s.db"), &["whoami"]).trim().to_owned();
    let (code, _, err) = run(
        &nobody,
        &[
            "verify-proof",
            inclusion.to_str().unwrap(),
            "--checkpoint",
            c2.to_str().unwrap(),
            "--key",
            &stranger,
        ],
    );
    assert_eq!(code, 5, "{err}");
    let text = std::fs::read_to_string(&inclusion).unwrap();
    let proof: serde_json::Value = serde_json::from_str(&text).unwrap();
    let index = proof["index"].as_u64().unwrap();
    let altered = text.replacen(
        &format!("\"index\":{index}"),
        &format!("\"index\":{}", index + 1),
        1,
    );
    assert_ne!(altered, text, "the proof JSON has an index field");
    std::fs::write(&inclusion, altered).unwrap();
    let (code, _, err) = run(
        &nobody,
        &[
            "verify-proof",
            inclusion.to_str().unwrap(),
            "--checkpoint",
            c2.to_str().unwrap(),
            "--key",
            &key,
        ],
    );
    assert_eq!(code, 5, "{err}");
}

#[test]
fn a_concurrent_edit_by_a_removed_member_shows_as_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let schema = dir.path().join("s.toml");
    std::fs::write(&schema, "[[fields]]\nname = \"name\"\ntype = \"text\"\n").unwrap();
    let schema = schema.to_str().unwrap();
    ok(&a, &["registry", "create", "r", "--schema", schema]);
    let bob = ok(&b, &["whoami"]).trim().to_owned();
    ok(&a, &["members", "add", "r", &bob, "--role", "writer"]);
    ok(&a, &["put", "r", "x", "name=original"]);
    let bundle = dir.path().join("r.bundle");
    let bundle = bundle.to_str().unwrap();
    ok(&a, &["export", "r", "--out", bundle]);
    ok(&b, &["import", bundle]);

    // A removes B while B, offline, edits x.
    ok(&a, &["members", "rm", "r", &bob]);
    ok(&b, &["put", "r", "x", "name=edited by b"]);
    ok(&b, &["export", "r", "--out", bundle]);
    ok(&a, &["import", bundle]);

    assert_eq!(json(&a, &["get", "r", "x"])["name"], "original");
    let audit = ok(&a, &["audit", "r"]);
    assert!(audit.contains("REVOKED"), "{audit}");
    let verified = json(&a, &["verify", "r"]);
    assert_eq!(verified["registries"][0]["revoked"], 1, "{verified}");
}
