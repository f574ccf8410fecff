//! The services the tests need, checked once per test process: when one is not reachable
//! the process stops at its first use with one line per missing service (what to start,
//! or which `LETHE_TEST_*` URL to set) instead of every test failing on a connection
//! timeout. Tests that use only SQLite never call this and run without them.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

/// A service some tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Postgres,
    MariaDb,
}

impl Service {
    const ALL: [Service; 2] = [Service::Postgres, Service::MariaDb];

    fn name(self) -> &'static str {
        match self {
            Service::Postgres => "PostgreSQL",
            Service::MariaDb => "MariaDB",
        }
    }

    /// The variable that points the tests at another server.
    pub fn env(self) -> &'static str {
        match self {
            Service::Postgres => "LETHE_TEST_PG_URL",
            Service::MariaDb => "LETHE_TEST_MYSQL_URL",
        }
    }

    fn default_url(self) -> &'static str {
        match self {
            Service::Postgres => "postgres://postgres@127.0.0.1:5432/test",
            Service::MariaDb => "mysql://root@127.0.0.1:3306/test",
        }
    }

    fn compose_service(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::MariaDb => "mariadb",
        }
    }

    /// Its admin URL: the `LETHE_TEST_*` variable, else the local default.
    pub fn url(self) -> String {
        std::env::var(self.env()).unwrap_or_else(|_| self.default_url().to_string())
    }
}

/// Whether a server listens at `url`'s host and port (one TCP connection, 2 s at most);
/// the error is the line the tests print.
pub fn reachable(service: Service, url: &str) -> Result<(), String> {
    let port = match service {
        Service::Postgres => 5432,
        Service::MariaDb => 3306,
    };
    let host_port = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split(['/', '?']).next())
        .map(|authority| authority.rsplit('@').next().unwrap_or(authority))
        .unwrap_or_default();
    let address = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:{port}")
    };
    let connected = address
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_string()))
        .and_then(|addr| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())
        });
    connected.map(|_| ()).map_err(|why| {
        format!(
            "{} is not reachable at {address} ({why}): start it (e.g. `docker compose -f \
             docker/compose.yaml up -d {}`) or set {} to a server the tests may create \
             databases on",
            service.name(),
            service.compose_service(),
            service.env()
        )
    })
}

static STATUS: OnceLock<Vec<(Service, Result<(), String>)>> = OnceLock::new();

/// The admin URL of `service`; stops the test process with one line per missing service
/// when `service` is not reachable.
pub fn require(service: Service) -> String {
    let status = STATUS.get_or_init(|| {
        Service::ALL
            .iter()
            .map(|s| (*s, reachable(*s, &s.url())))
            .collect()
    });
    let missing = status
        .iter()
        .any(|(s, result)| *s == service && result.is_err());
    if missing {
        // Straight to the file descriptor: the test harness captures eprintln!, and its
        // capture is lost when the process exits.
        let mut text = String::from("\nthese tests need services that are not running:\n");
        for (_, result) in status {
            if let Err(line) = result {
                text.push_str(&format!("  - {line}\n"));
            }
        }
        text.push_str("(the tests that need neither still run: `cargo test --no-fail-fast`)\n\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
        std::process::exit(1);
    }
    service.url()
}
