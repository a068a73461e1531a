//! `hutch token`: mint a bearer token with the server's secret.

use std::path::PathBuf;

use anyhow::Context;

/// Options of `hutch token`.
#[derive(clap::Args, Debug)]
pub(crate) struct TokenArgs {
    /// The tenant (the token's `sub` claim).
    #[arg(long)]
    sub: String,
    /// How long the token is valid: 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = crate::duration::parse)]
    ttl: std::time::Duration,
    /// Let the token see every tenant's sessions.
    #[arg(long)]
    admin: bool,
    /// The server's data directory (where its generated secret lives).
    #[arg(long, env = "HUTCH_DATA_DIR", default_value = "/var/lib/hutch")]
    data_dir: PathBuf,
    /// HS256 secret, when the server is configured with one.
    #[arg(long, env = "HUTCH_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// `iss` claim, when the server requires one.
    #[arg(long, env = "HUTCH_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// `aud` claim, when the server requires one.
    #[arg(long, env = "HUTCH_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
}

pub(crate) fn main(args: TokenArgs) -> anyhow::Result<()> {
    let secret = hutch_server::auth::load_secret(args.jwt_secret.as_deref(), &args.data_dir)
        .with_context(|| format!("loading the token secret from {}", args.data_dir.display()))?;
    let options = hutch_server::MintOptions {
        issuer: args.jwt_issuer,
        audience: args.jwt_audience,
    };
    let token = hutch_server::auth::mint_token_with(
        secret.as_bytes(),
        &args.sub,
        args.ttl,
        args.admin,
        &options,
    )
    .context("minting the token")?;
    println!("{token}");
    Ok(())
}
