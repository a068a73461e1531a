//! Stores for tests: SQLite in a temporary directory, and databases in a real PostgreSQL
//! cluster that the test binary starts itself (once, on first use).
//!
//! The cluster is a [`ScratchPostgres`]: it stops, and its directory goes, when the test
//! process ends, however it ends. Each test gets a database of its own.

use std::sync::OnceLock;

use uuid::Uuid;

use super::scratch::ScratchPostgres;
use super::{Store, StoreLocation};

/// The cluster of this test binary, started on first use and stopped when the process ends.
static CLUSTER: OnceLock<Result<ScratchPostgres, String>> = OnceLock::new();

/// A fresh SQLite store in a temporary directory (kept alive by the returned guard).
pub(crate) async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(&StoreLocation::Sqlite(dir.path().join("hutch.db")), true)
        .await
        .expect("opening a SQLite store");
    (store, dir)
}

/// The URL of database `name` in the test cluster, starting the cluster on first use.
pub(crate) fn postgres_url(name: &str) -> String {
    CLUSTER
        .get_or_init(ScratchPostgres::start)
        .as_ref()
        .unwrap_or_else(|err| panic!("starting the test PostgreSQL cluster: {err}"))
        .url(name)
}

/// A new, empty database in the test cluster; returns its URL.
pub(crate) async fn postgres_database() -> String {
    let name = format!("t_{}", Uuid::new_v4().simple());
    admin(&[&format!("CREATE DATABASE {name}")]).await;
    postgres_url(&name)
}

/// A new, empty database owned by a new role that is not a superuser (so that limits on
/// roles apply to it); returns its URL, connecting as that role, and the role's name.
pub(crate) async fn postgres_database_of_a_role() -> (String, String) {
    let name = format!("t_{}", Uuid::new_v4().simple());
    admin(&[
        &format!("CREATE ROLE {name} LOGIN"),
        &format!("CREATE DATABASE {name} OWNER {name}"),
    ])
    .await;
    let url =
        postgres_url(&name).replacen("postgres://postgres@", &format!("postgres://{name}@"), 1);
    (url, name)
}

/// Runs statements as the cluster's superuser.
pub(crate) async fn admin(statements: &[&str]) {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(&postgres_url("postgres"))
        .await
        .expect("connecting to the test cluster");
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    admin.close().await.expect("closing the admin connection");
}

/// A fresh PostgreSQL store (a database of its own in the test cluster), migrated.
pub(crate) async fn postgres() -> Store {
    let url = postgres_database().await;
    Store::open(&StoreLocation::Postgres(url), true)
        .await
        .expect("opening a PostgreSQL store")
}

/// Another store on the same database as `store` (as a second replica would open it).
pub(crate) async fn reopen(store: &Store) -> Store {
    Store::open(store.location(), true)
        .await
        .expect("opening the store again")
}

/// An empty database of the same kind as `store`'s, not migrated.
pub(crate) async fn empty_like(store: &Store) -> StoreLocation {
    match store.location() {
        StoreLocation::Sqlite(path) => {
            let dir = path.parent().expect("the database's directory");
            StoreLocation::Sqlite(dir.join(format!("{}.db", Uuid::new_v4().simple())))
        }
        StoreLocation::Postgres(_) => StoreLocation::Postgres(postgres_database().await),
    }
}

/// Runs one statement on `store` (tests that set up rows the API cannot make).
pub(crate) async fn execute(store: &Store, sql: &'static str) {
    super::on_pool!(store, |pool| sqlx::query(sql)
        .execute(pool)
        .await
        .map(|_| ()))
    .expect("executing a test statement");
}

/// Defines, for each `async fn name(store: Store)` named, a module `name` with two tests:
/// `sqlite` runs it on a fresh SQLite store, `postgres` on a fresh PostgreSQL database.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (store, _dir) = $crate::store::testing::sqlite().await;
                super::$name(store.clone()).await;
                store.close().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let store = $crate::store::testing::postgres().await;
                super::$name(store.clone()).await;
                store.close().await;
            }
        }
    )*};
}
pub(crate) use on_both;
