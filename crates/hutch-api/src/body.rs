//! What every JSON request body shares.

/// Whether a JSON request body is an object (or empty, which reads as `{}`): serde would
/// take a struct from an array of its fields in order too, which the API never promises.
pub fn is_object_or_empty(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|&first| first == b'{')
}

/// The message of the 400 for a body that is not an object.
pub const NOT_AN_OBJECT: &str = "the request body must be a JSON object";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_objects_and_empty_bodies_pass() {
        for ok in [&b""[..], b"  ", b"{}", b" \n{\"a\":1}", b"{"] {
            assert!(is_object_or_empty(ok), "{ok:?}");
        }
        for bad in [&b"[]"[..], b" [60,null]", b"60", b"\"x\"", b"null"] {
            assert!(!is_object_or_empty(bad), "{bad:?}");
        }
    }
}
