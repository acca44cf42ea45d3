//! Every fuzz target passes its seeds, the corpus and the crashers kept in
//! `fuzz/` (inputs that once failed), and a fixed set of mutations of them,
//! so a decoder that regresses fails `cargo test`.

use std::time::Duration;

use chittysync_fuzz::{TARGETS, runner};

#[test]
fn every_target_passes_its_kept_inputs_and_their_mutations() {
    for (name, target) in TARGETS {
        assert!(
            !chittysync_fuzz::seeds(name).is_empty(),
            "{name} has no seeds"
        );
        let outcome = runner::run(name, *target, Duration::from_secs(60), 150, 7);
        if let Some((path, message)) = outcome.failure {
            panic!("{name} failed on {}: {message}", path.display());
        }
        assert!(outcome.runs >= 150, "{name} ran {} inputs", outcome.runs);
    }
}

#[test]
fn mutations_are_reproducible_from_the_seed() {
    let pool = vec![b"CSE1 some bytes to change".to_vec()];
    let run = |seed| {
        let mut rng = runner::Rng::new(seed);
        let mut input = pool[0].clone();
        for _ in 0..50 {
            runner::mutate(&mut input, &pool, &mut rng);
        }
        input
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}
