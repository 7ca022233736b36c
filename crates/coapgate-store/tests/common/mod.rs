//! One database per test, on either backend, and a macro that runs a test
//! once on each.

// Test helpers panic to report a failure, like the #[test]s that call them.
#![allow(clippy::unwrap_used, dead_code)]

use coapgate_store::Store;

/// A fresh, empty database of one backend, removed on drop.
pub enum Db {
    /// A SQLite file in a temporary directory.
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    /// A database on a throw-away PostgreSQL server of its own.
    #[cfg(feature = "postgres")]
    Postgres {
        server: coapgate_testkit::Postgres,
        url: String,
    },
}

impl Db {
    /// The PostgreSQL server of a PostgreSQL database, to look at (see
    /// `server` to stop or restart it).
    #[cfg(feature = "postgres")]
    pub fn pg(&self) -> &coapgate_testkit::Postgres {
        match self {
            Db::Postgres { server, .. } => server,
            Db::Sqlite { .. } => panic!("a SQLite database has no PostgreSQL server"),
        }
    }

    pub fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("coapgate.db").display());
        Db::Sqlite { _dir: dir, url }
    }

    /// `None` (after a loud SKIPPED line) when PostgreSQL is not installed
    /// outside CI.
    #[cfg(feature = "postgres")]
    pub fn postgres(test: &str) -> Option<Db> {
        let server = coapgate_testkit::Postgres::start(test)?;
        let url = server.create_database("coapgate");
        Some(Db::Postgres { server, url })
    }

    /// The store URL (open it as often as you like: a restart, or a second
    /// instance on the same database).
    pub fn url(&self) -> &str {
        match self {
            Db::Sqlite { url, .. } => url,
            #[cfg(feature = "postgres")]
            Db::Postgres { url, .. } => url,
        }
    }

    pub fn open(&self) -> Store {
        coapgate_store::open(self.url()).unwrap()
    }

    #[cfg(feature = "postgres")]
    pub fn server(&mut self) -> &mut coapgate_testkit::Postgres {
        match self {
            Db::Postgres { server, .. } => server,
            Db::Sqlite { .. } => panic!("not a PostgreSQL database"),
        }
    }
}

/// Runs each named `fn(&Db)` as two tests: `sqlite::NAME` and
/// `postgres::NAME`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::common::Db::sqlite());
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    if let Some(db) = super::common::Db::postgres(test) {
                        super::$name(&db);
                    }
                }
            )*
        }
    };
}
