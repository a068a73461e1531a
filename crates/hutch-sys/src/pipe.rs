//! Pipes.

use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{PipeFlags, pipe_with};

/// A pipe whose both ends are close-on-exec: `(read, write)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(pipe_with(PipeFlags::CLOEXEC)?)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    #[test]
    fn bytes_written_to_a_pipe_are_read_from_its_other_end_and_neither_end_leaks_into_exec() {
        let (r, w) = super::pipe().expect("pipe");
        for fd in [&r, &w] {
            let flags = rustix::io::fcntl_getfd(fd).expect("getfd");
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
        let mut w = std::fs::File::from(w);
        w.write_all(b"hello").expect("write");
        drop(w);
        let mut text = String::new();
        std::fs::File::from(r)
            .read_to_string(&mut text)
            .expect("read");
        assert_eq!(text, "hello");
    }
}
