//! The seccomp filter inside a session: the x32 ABI cannot be used to reach a system call the
//! filter denies (or any other).

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use common::{TestServer, can_run_sandboxes, session, sh};

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn x32_system_calls_are_refused_inside_a_session() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    // unshare(CLONE_NEWUSER) and getpid through the x32 ABI (bit 30 of the number): EPERM
    // from the filter, where a kernel without x32 would say ENOSYS and one with it would run
    // them. The same calls through the x86-64 ABI: unshare refused, getpid served.
    let probe = r#"python3 -c '
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(nr, *args)
    return "ok" if rc >= 0 else errno.errorcode[ctypes.get_errno()]
X32, UNSHARE, GETPID, CLONE_NEWUSER = 0x40000000, 272, 39, 0x10000000
print(call(X32 | UNSHARE, CLONE_NEWUSER), call(X32 | GETPID), call(UNSHARE, CLONE_NEWUSER), call(GETPID))
'"#;
    let result = sh(&client, &s, probe).await;
    assert_eq!(result.stdout, "EPERM EPERM EPERM ok\n", "{result:?}");
}
