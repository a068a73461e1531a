//! `libraries` of an execution: which are missing, installing those, and saying why an install
//! failed.
//!
//! Python packages go to [`PYTHON_LIBRARIES_DIR`] with `pip install --target`, never into the
//! image's own site-packages: images that follow PEP 668 (Debian's python among them) refuse
//! `pip install` there, and forcing it (`--break-system-packages`) could replace packages the
//! image's own tools depend on. The directory is on `PYTHONPATH` of every process the agent
//! starts ([`with_libraries_on_python_path`]), so contexts, `/code` runs and commands all
//! import what was installed, and it lives in `/workspace`, so it lasts as long as the
//! session's files (and travels with them when `/workspace` is synced to a storage context,
//! which then spares the next session the install). Node packages go where `npm install` puts
//! them: `node_modules` of the context's working directory.

use std::sync::Arc;
use std::time::Duration;

use hutch_api::ExecuteRequest;

use super::Context;
use super::worker::Worker;
use crate::Agent;

/// Where `libraries` of python contexts are installed.
pub(crate) const PYTHON_LIBRARIES_DIR: &str = "/workspace/.hutch/site-packages";

/// `env` with [`PYTHON_LIBRARIES_DIR`] appended to its `PYTHONPATH` (after any directory the
/// session's environment already names).
pub(crate) fn with_libraries_on_python_path(
    mut env: std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    let path = match env.get("PYTHONPATH").filter(|p| !p.is_empty()) {
        Some(p) if p.split(':').any(|d| d == PYTHON_LIBRARIES_DIR) => p.clone(),
        Some(p) => format!("{p}:{PYTHON_LIBRARIES_DIR}"),
        None => PYTHON_LIBRARIES_DIR.to_owned(),
    };
    env.insert("PYTHONPATH".to_owned(), path);
    env
}

/// Lists which of the distributions or modules named on its command line are not installed.
const PYTHON_CHECK: &str = "import sys, importlib.util, importlib.metadata as m, re\n\
missing = []\n\
for spec in sys.argv[1:]:\n\
\x20   name = re.split(r'[\\[<>=!~; ]', spec, maxsplit=1)[0]\n\
\x20   try:\n\
\x20       m.distribution(name)\n\
\x20       continue\n\
\x20   except Exception:\n\
\x20       pass\n\
\x20   try:\n\
\x20       if importlib.util.find_spec(name.replace('-', '_')) is not None:\n\
\x20           continue\n\
\x20   except Exception:\n\
\x20       pass\n\
\x20   missing.append(spec)\n\
print('\\n'.join(missing))\n";

/// Lists which of the packages named on its command line `require` cannot resolve.
const NODE_CHECK: &str = "const missing = [];\n\
for (const spec of process.argv.slice(1)) {\n\
\x20 const name = spec.replace(/(.)@.*$/, '$1');\n\
\x20 try { require.resolve(name, { paths: [process.cwd()] }); } catch { missing.push(spec); }\n\
}\n\
console.log(missing.join('\\n'));\n";

/// How one language checks for and installs its libraries.
struct Installer {
    /// The installer's name in messages.
    tool: &'static str,
    /// Whether the installer runs with the libraries directory on `PYTHONPATH`.
    python: bool,
    check: &'static [&'static str],
    install: &'static [&'static str],
    /// Makes the installer give up at once when nothing can be reached.
    no_retries: &'static str,
    /// What the installer downloads from: "package index", "package registry".
    source: &'static str,
    /// The environment variable that names the package index proxy the server gives every
    /// session when the operator configured an index for this installer.
    proxy_env: &'static str,
}

const PIP: Installer = Installer {
    tool: "pip",
    python: true,
    check: &["python3", "-c", PYTHON_CHECK],
    install: &[
        "python3",
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
        "--target",
        PYTHON_LIBRARIES_DIR,
    ],
    no_retries: "--retries=0",
    source: "package index",
    proxy_env: "PIP_PROXY",
};

const NPM: Installer = Installer {
    tool: "npm",
    python: false,
    check: &["node", "-e", NODE_CHECK],
    install: &["npm", "install", "--no-audit", "--no-fund", "--silent"],
    no_retries: "--fetch-retries=0",
    source: "package registry",
    proxy_env: "npm_config_proxy",
};

/// Makes sure every package of `req.libraries` is present, installing the missing ones inside
/// the context's cgroup: `Ok(true)` when something was installed. `Err` says what could not
/// be installed and why.
pub(crate) async fn install(
    agent: &Agent,
    ctx: &Context,
    slot: &Option<Worker>,
    req: &ExecuteRequest,
    timeout: Duration,
) -> Result<bool, String> {
    let Some(libs) = req.libraries.as_ref().filter(|l| !l.is_empty()) else {
        return Ok(false);
    };
    let Some(handle) = slot.as_ref().map(|w| Arc::clone(&w.handle)) else {
        return Ok(false);
    };
    let installer = match ctx.config.language.as_str() {
        "python" => &PIP,
        "javascript" => &NPM,
        other => return Err(format!("libraries are not supported for {other} contexts")),
    };
    let mut env = agent.base_env.clone();
    env.extend(ctx.config.env.clone());
    if installer.python {
        // The context's own environment may name a PYTHONPATH of its own.
        env = with_libraries_on_python_path(env);
        env.insert("PIP_ROOT_USER_ACTION".to_owned(), "ignore".to_owned());
    }
    let env: Vec<(String, String)> = env.into_iter().collect();
    let cwd = ctx.config.cwd.as_str();

    let mut argv = owned(installer.check);
    argv.extend(libs.iter().cloned());
    let (code, out) = handle
        .run_helper(agent, &argv, cwd, &env, timeout)
        .await
        .map_err(|e| format!("could not check {}: {e}", libs.join(", ")))?;
    if code != 0 {
        return Err(format!(
            "could not check {}: {}",
            libs.join(", "),
            out.trim()
        ));
    }
    let missing: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }

    // A proxy the server gives every session (its package index, `--pip-index-url` or
    // `--npm-registry`) is a way out for the installer even without network.
    let proxied = env.iter().any(|(k, _)| k == installer.proxy_env);
    let offline = !has_network() && !proxied;
    let mut argv = owned(installer.install);
    if offline {
        argv.push(installer.no_retries.to_owned());
    }
    argv.extend(missing.iter().cloned());
    let said = match handle.run_helper(agent, &argv, cwd, &env, timeout).await {
        Ok((0, _)) => return Ok(true),
        Ok((code, out)) => format!("{} (exit code {code})", last_error_line(&out)),
        Err(e) => e,
    };
    let needs_download = missing.iter().any(|spec| !is_local(spec));
    Err(if offline && needs_download {
        format!(
            "could not install {}: the session has no network access, so {} cannot reach a {} \
             (create the session with a `network` policy that allows it); libraries given as \
             paths to packages inside the session install without it. {} said: {said}",
            missing.join(", "),
            installer.tool,
            installer.source,
            installer.tool,
        )
    } else if needs_download {
        format!(
            "could not install {}: {said} (if the {} is not in the session's network policy, \
             {} cannot reach it)",
            missing.join(", "),
            installer.source,
            installer.tool
        )
    } else {
        format!("could not install {}: {said}", missing.join(", "))
    })
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// The line of an installer's output that says what went wrong: its last `ERROR` line, else
/// its last line.
fn last_error_line(out: &str) -> &str {
    let lines = || out.lines().map(str::trim).filter(|l| !l.is_empty());
    lines()
        .rfind(|l| {
            l.starts_with("ERROR") || l.starts_with("npm ERR!") || l.starts_with("npm error")
        })
        .or_else(|| lines().next_back())
        .unwrap_or("no output")
}

/// Whether a library names something inside the session (a wheel, an archive or a project
/// directory) rather than a package to download.
fn is_local(spec: &str) -> bool {
    spec.starts_with('/')
        || spec.starts_with("./")
        || spec.starts_with("../")
        || spec.starts_with("file:")
        || [".whl", ".tar.gz", ".zip", ".tgz"]
            .iter()
            .any(|ext| spec.ends_with(ext))
}

/// Whether the sandbox has a route through an interface other than loopback (read from its
/// own network namespace).
fn has_network() -> bool {
    let routes = |path: &str, iface_column: usize| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(iface_column).map(str::to_owned))
            .any(|iface| iface != "lo" && iface != "Iface")
    };
    routes("/proc/net/route", 0) || routes("/proc/net/ipv6_route", 9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_libraries_directory_is_appended_to_pythonpath_once() {
        let env = with_libraries_on_python_path(Default::default());
        assert_eq!(env["PYTHONPATH"], PYTHON_LIBRARIES_DIR);
        let env = with_libraries_on_python_path(std::collections::BTreeMap::from([(
            "PYTHONPATH".to_owned(),
            "/mine".to_owned(),
        )]));
        assert_eq!(env["PYTHONPATH"], format!("/mine:{PYTHON_LIBRARIES_DIR}"));
        assert_eq!(with_libraries_on_python_path(env.clone()), env);
    }

    #[test]
    fn local_packages_are_told_from_downloads() {
        assert!(is_local("/workspace/dist/demo-0.1-py3-none-any.whl"));
        assert!(is_local("./vendor/pkg"));
        assert!(is_local("demo-0.1.tar.gz"));
        assert!(!is_local("requests"));
        assert!(!is_local("pandas>=2"));
        assert!(!is_local("@scope/pkg@1.2"));
    }

    #[test]
    fn the_error_line_of_pip_is_picked() {
        let out = "Collecting x\nERROR: Could not find a version\nERROR: No matching distribution found for x\n\n";
        assert_eq!(
            last_error_line(out),
            "ERROR: No matching distribution found for x"
        );
        assert_eq!(last_error_line("just this\n"), "just this");
        assert_eq!(last_error_line(""), "no output");
    }
}
