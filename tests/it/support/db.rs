//! Databases for tests: a fresh SQLite file or PostgreSQL database per
//! test, direct reads of what it holds, and running a test on both.

use std::str::FromStr;
use std::time::Duration;

use super::peers::opted_out;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn name(backend: Backend)` once per backend, as
/// `sqlite::name` and `postgres::name`, on two worker threads so that
/// concurrent work really runs at once.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::support::Backend::Sqlite).await
            })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::support::Backend::Postgres).await
            })+
        }
    };
}
pub(crate) use on_both_backends;

/// The server PostgreSQL tests create their databases on.
fn postgres_admin_url() -> String {
    std::env::var("ASSAY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty database for one test, removed when dropped.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    /// `None` only when the run opts out of PostgreSQL
    /// (`ASSAY_TEST_SKIP=postgres`): the caller skips, and a notice says so.
    /// An unreachable PostgreSQL fails the test.
    pub async fn create(backend: Backend) -> Option<TestDb> {
        let dir = tempfile::tempdir().unwrap();
        if backend == Backend::Postgres && opted_out("postgres") {
            eprintln!("NOTICE: skipping a PostgreSQL test: ASSAY_TEST_SKIP names postgres");
            return None;
        }
        match backend {
            Backend::Sqlite => Some(TestDb {
                backend,
                url: format!("sqlite://{}", dir.path().join("assay.db").display()),
                dir,
                pg_name: None,
            }),
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let options = PgConnectOptions::from_str(&admin).unwrap();
                let connect = options.connect();
                let mut conn = match tokio::time::timeout(Duration::from_secs(5), connect).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => postgres_missing(&e.to_string()),
                    Err(_) => postgres_missing("connection timed out"),
                };
                let name = format!("assay_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                let mut url = url::Url::parse(&admin).unwrap();
                url.set_path(&name);
                Some(TestDb {
                    backend,
                    url: url.to_string(),
                    dir,
                    pg_name: Some(name),
                })
            }
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Runs one `SELECT COUNT(*)`-style scalar query straight on the
    /// database, bypassing Assay.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnectOptions::new()
                    .filename(path)
                    .read_only(true)
                    .connect()
                    .await
                    .unwrap();
                let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                n
            }
            Backend::Postgres => {
                let mut conn = PgConnectOptions::from_str(&self.url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                n
            }
        }
    }

    /// Runs one query straight on the database and returns its first
    /// column as text, one entry a row; `args` bind `$1`, `$2`, ... in order.
    pub async fn texts(&self, sql: &str, args: &[&str]) -> Vec<String> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnectOptions::new()
                    .filename(path)
                    .read_only(true)
                    .connect()
                    .await
                    .unwrap();
                let mut query = sqlx::query_scalar(sql);
                for arg in args {
                    query = query.bind(*arg);
                }
                let rows = query.fetch_all(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                rows
            }
            Backend::Postgres => {
                let mut conn = PgConnectOptions::from_str(&self.url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let mut query = sqlx::query_scalar(sql);
                for arg in args {
                    query = query.bind(*arg);
                }
                let rows = query.fetch_all(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                rows
            }
        }
    }

    /// Whether `needle` appears anywhere in the stored data: in the SQLite
    /// files' bytes (database and write-ahead log), or in any row of any
    /// PostgreSQL table.
    pub async fn holds(&self, needle: &str) -> bool {
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                ["", "-wal"].iter().any(|suffix| {
                    std::fs::read(format!("{path}{suffix}")).is_ok_and(|bytes| {
                        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                    })
                })
            }
            Backend::Postgres => {
                let mut conn = PgConnectOptions::from_str(&self.url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap();
                let mut found = false;
                for table in tables {
                    let sql = format!(
                        "SELECT COUNT(*) FROM \"{table}\" AS t WHERE row_to_json(t)::text LIKE $1"
                    );
                    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(format!("%{needle}%"))
                        .fetch_one(&mut conn)
                        .await
                        .unwrap();
                    found |= n > 0;
                }
                conn.close().await.unwrap();
                found
            }
        }
    }

    /// Applies the backend's migrations older than `version` only: the
    /// schema an earlier release left, for upgrade tests.
    pub async fn migrate_before(&self, version: i64) {
        let dir = match self.backend {
            Backend::Sqlite => "migrations/sqlite",
            Backend::Postgres => "migrations/postgres",
        };
        let migrator = sqlx::migrate::Migrator::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        )
        .await
        .unwrap();
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .foreign_keys(true)
                    .connect()
                    .await
                    .unwrap();
                migrator.run_to(version - 1, &mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            Backend::Postgres => {
                let mut conn = PgConnectOptions::from_str(&self.url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                migrator.run_to(version - 1, &mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// Runs one statement straight on the database, with `args` bound to
    /// `$1`, `$2`, ... in order (SQLite reads `$N` too), references checked.
    pub async fn execute_with(&self, sql: &str, args: &[&str]) -> Result<u64, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnectOptions::new()
                    .filename(path)
                    .foreign_keys(true)
                    .connect()
                    .await
                    .unwrap();
                let mut query = sqlx::query(sql);
                for arg in args {
                    query = query.bind(*arg);
                }
                let done = query.execute(&mut conn).await;
                conn.close().await.unwrap();
                done.map(|d| d.rows_affected())
            }
            Backend::Postgres => {
                let mut conn = PgConnectOptions::from_str(&self.url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let mut query = sqlx::query(sql);
                for arg in args {
                    query = query.bind(*arg);
                }
                let done = query.execute(&mut conn).await;
                conn.close().await.unwrap();
                done.map(|d| d.rows_affected())
            }
        }
    }

    /// Runs one statement straight on the database.
    pub async fn execute(&self, sql: &'static str) {
        self.try_execute(sql).await.unwrap();
    }

    /// Runs one statement straight on the database; the database's answer.
    pub async fn try_execute(&self, sql: &'static str) -> Result<u64, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnectOptions::new()
                    .filename(path)
                    .connect()
                    .await
                    .unwrap();
                let done = sqlx::query(sql).execute(&mut conn).await;
                conn.close().await.unwrap();
                done.map(|d| d.rows_affected())
            }
            Backend::Postgres => {
                let mut conn = PgConnectOptions::from_str(&self.url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let done = sqlx::query(sql).execute(&mut conn).await;
                conn.close().await.unwrap();
                done.map(|d| d.rows_affected())
            }
        }
    }

    /// Row counts of every table, for "nothing changed" checks.
    pub async fn counts(&self) -> [i64; 4] {
        [
            self.scalar("SELECT COUNT(*) FROM stripe_events").await,
            self.scalar("SELECT COUNT(*) FROM runs").await,
            self.scalar("SELECT COUNT(*) FROM run_timeline").await,
            self.scalar("SELECT COUNT(*) FROM incidents").await,
        ]
    }
}

fn postgres_missing(why: &str) -> ! {
    panic!(
        "this test needs PostgreSQL at {} ({why}): start it, or name another server in ASSAY_TEST_POSTGRES_URL; or opt out with ASSAY_TEST_SKIP=postgres",
        postgres_admin_url()
    )
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop cannot await; a short-lived thread with its own runtime can.
        let admin = postgres_admin_url();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = PgConnectOptions::from_str(&admin)
                    .ok()?
                    .connect()
                    .await
                    .ok()?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("NOTICE: could not drop a test database");
        }
    }
}
