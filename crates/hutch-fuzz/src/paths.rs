//! Path strings of the file API: cleaning and resolution inside the sandbox root.

use hutch_agent::fuzzing::{clean_path, mode, resolve};

use crate::Scratch;

/// A request's path: cleaning is idempotent and leaves an absolute path of plain components,
/// and whatever the kernel resolves it to (links included) is inside the root.
pub(crate) fn file_paths(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let _ = mode(&raw);
    let Ok(clean) = clean_path(&raw) else {
        return;
    };
    assert!(clean.starts_with('/'), "{clean:?} is not absolute");
    assert!(
        clean == "/"
            || clean[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
        "{clean:?} keeps empty, . or .. components"
    );
    assert_eq!(
        clean_path(&clean).as_deref(),
        Ok(clean.as_str()),
        "cleaning twice differs"
    );
    let scratch = Scratch::new();
    let (opened, parent) = resolve(&scratch.root, &raw).unwrap();
    for found in [opened, parent].into_iter().flatten() {
        assert!(
            found.starts_with(&scratch.root),
            "{raw:?} resolved to {found:?}, outside the root {:?}",
            scratch.root
        );
    }
    scratch.assert_confined();
}
