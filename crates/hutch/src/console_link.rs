//! `hutch console-link`: print a one-time login link of the web console, signed with the
//! server's secret.

use std::path::PathBuf;

use anyhow::Context;

/// Options of `hutch console-link`.
#[derive(clap::Args, Debug)]
pub(crate) struct ConsoleLinkArgs {
    /// The tenant whose console the link opens.
    #[arg(long, default_value = "default")]
    sub: String,
    /// Let the console see every tenant's sessions.
    #[arg(long)]
    admin: bool,
    /// How long the link may be opened (once): 90s, 5m, at most 1h.
    #[arg(long, default_value = "5m", value_parser = crate::duration::parse)]
    ttl: std::time::Duration,
    /// The server's URL as the browser reaches it.
    #[arg(long, env = "HUTCH_URL", default_value = "http://127.0.0.1:7420")]
    url: String,
    /// The server's data directory (where its generated secret lives).
    #[arg(long, env = "HUTCH_DATA_DIR", default_value = "/var/lib/hutch")]
    data_dir: PathBuf,
    /// HS256 secret, when the server is configured with one.
    #[arg(long, env = "HUTCH_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
}

pub(crate) fn main(args: ConsoleLinkArgs) -> anyhow::Result<()> {
    let secret = hutch_server::auth::load_secret(args.jwt_secret.as_deref(), &args.data_dir)
        .with_context(|| format!("loading the token secret from {}", args.data_dir.display()))?;
    let token =
        hutch_server::console::login_token(secret.as_bytes(), &args.sub, args.admin, args.ttl)
            .context("signing the login link")?;
    let base = args.url.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    println!("{base}/console/login?t={token}");
    Ok(())
}
