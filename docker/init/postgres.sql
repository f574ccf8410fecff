-- lethe's store for the demo (database `test`, for cargo test, comes from POSTGRES_DB).
CREATE DATABASE lethe;
