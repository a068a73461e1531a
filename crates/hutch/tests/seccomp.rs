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

/// Runs each `(name, number, arguments)` system call through ctypes in the session and prints
/// the errno name of each, or `ok`.
#[cfg(target_arch = "x86_64")]
fn syscall_probe(calls: &[(&str, u32, &str)]) -> String {
    let calls = calls
        .iter()
        .map(|(name, nr, args)| format!("({name:?}, {nr}, ({args}))"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"python3 -c '
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
for name, nr, args in [{calls}]:
    ctypes.set_errno(0)
    rc = libc.syscall(nr, *args)
    print(name, "ok" if rc >= 0 else errno.errorcode[ctypes.get_errno()])
'"#
    )
}

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn calls_an_attacker_wants_are_refused_and_calls_outside_the_allow_list_are_unknown() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    // Every one of these, with harmless arguments, would reach the kernel without the filter
    // (and most would then fail for want of a capability); the deny list answers EPERM first.
    let denied = [
        ("kexec_load", 246, "0, 0, 0, 0"),
        ("open_by_handle_at", 304, "-100, 0, 0"),
        ("bpf", 321, "0, 0, 0"),
        ("userfaultfd", 323, "0,"),
        ("perf_event_open", 298, "0, 0, -1, -1, 0"),
        ("unshare_newuser", 272, "0x10000000,"),
        ("keyctl", 250, "0, 0, 0, 0, 0"),
        ("add_key", 248, "0, 0, 0, 0, 0"),
    ];
    let result = sh(&client, &s, &syscall_probe(&denied)).await;
    let expected: String = denied
        .iter()
        .map(|(name, _, _)| format!("{name} EPERM\n"))
        .collect();
    assert_eq!(result.stdout, expected, "{result:?}");

    // Outside the allow list but not on the deny list: unknown (ENOSYS), as on a kernel
    // without them. getpid is on the list.
    let unlisted = [
        ("fanotify_init", 300, "0, 0"),
        ("migrate_pages", 256, "0, 0, 0, 0"),
        ("getpid", 39, ""),
    ];
    let result = sh(&client, &s, &syscall_probe(&unlisted)).await;
    assert_eq!(
        result.stdout, "fanotify_init ENOSYS\nmigrate_pages ENOSYS\ngetpid ok\n",
        "{result:?}"
    );
}

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn an_operator_extends_the_allow_list_but_cannot_allow_a_denied_call() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with(&["--seccomp-allow", "fanotify_init"]);
    let client = server.client("alice");
    let s = session(&client).await;
    let probe = syscall_probe(&[
        ("fanotify_init", 300, "0, 0"),
        ("migrate_pages", 256, "0, 0, 0, 0"),
    ]);
    let result = sh(&client, &s, &probe).await;
    // fanotify_init now reaches the kernel, which refuses it for want of CAP_SYS_ADMIN.
    assert!(
        result.stdout.starts_with("fanotify_init ")
            && !result.stdout.starts_with("fanotify_init ENOSYS"),
        "{result:?}"
    );
    assert!(
        result.stdout.ends_with("migrate_pages ENOSYS\n"),
        "{result:?}"
    );
    drop(server);

    for bad in ["bpf", "no_such_call"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hutch"))
            .args([
                "serve",
                "--seccomp-allow",
                bad,
                "--data-dir",
                "/nonexistent/hutch-seccomp",
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--seccomp-allow") && stderr.contains(bad),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn ordinary_programs_run_under_the_allow_list() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    // Threads, processes, pipes, sockets, sqlite, asyncio and a venv with pip; git; a C
    // program built with gcc and its threads; node's event loop and child processes; curl
    // against a local server.
    let workload = r#"set -e; cd /tmp
python3 -c '
import asyncio, multiprocessing, socket, sqlite3, subprocess, threading
def square(x): return x * x
with multiprocessing.Pool(2) as pool: assert pool.map(square, [1, 2, 3]) == [1, 4, 9]
t = threading.Thread(target=lambda: None); t.start(); t.join()
asyncio.run(asyncio.sleep(0.01))
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); s.close()
assert sqlite3.connect(":memory:").execute("select 1").fetchone() == (1,)
assert subprocess.run(["true"]).returncode == 0
print("python ok")'
python3 -m venv v && ./v/bin/pip --version >/dev/null && echo "pip ok"
git init -q g && cd g && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m m && git log --oneline | wc -l && cd ..
printf '#include <pthread.h>\n#include <stdio.h>\nvoid *f(void *a) { return a; }\nint main(void) { pthread_t t; pthread_create(&t, 0, f, 0); pthread_join(t, 0); puts("c ok"); return 0; }\n' > c.c
gcc -pthread c.c -o c && ./c
node -e 'require("child_process").execSync("true"); setTimeout(() => console.log("node ok"), 10)'
python3 -m http.server 18080 --bind 127.0.0.1 >/dev/null 2>&1 & for i in $(seq 50); do curl -sf http://127.0.0.1:18080/ >/dev/null && break; sleep 0.1; done; curl -sf -o /dev/null http://127.0.0.1:18080/ && echo "curl ok"; kill $!
"#;
    let result = common::sh_with(&client, &s, workload, 120.0).await;
    assert_eq!(
        result.stdout, "python ok\npip ok\n1\nc ok\nnode ok\ncurl ok\n",
        "{result:?}"
    );
}
