//! Every input in a target's corpus (`corpus/<target>/`: seeds taken from real clients and
//! tools, and every input that once found a bug) passes that target's checks. libFuzzer
//! explores from these (`scripts/fuzz.sh`); here they run as plain tests on every build.

use std::path::Path;

/// Runs every corpus input of `name`, naming the input that fails.
fn replay(name: &str) {
    let target = hutch_fuzz::target(name).expect("a target of that name");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} holds no seed", dir.display());
    for input in inputs {
        let data = std::fs::read(&input).expect("a readable input");
        eprintln!("{name}: {}", input.display());
        target(&data);
    }
}

macro_rules! corpus_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*

        #[test]
        fn every_target_has_a_corpus_test() {
            let tested = [$(stringify!($name)),*];
            for (name, _) in hutch_fuzz::TARGETS {
                assert!(tested.contains(name), "no corpus test for {name}");
            }
        }
    };
}

corpus_tests!(
    agent_preface,
    files_archive,
    storage_archive,
    file_paths,
    multipart,
    worker_pipes,
    process_frames,
    websocket_frames,
    auth_headers,
    image_reference,
    oci_layer,
    image_archive,
);
