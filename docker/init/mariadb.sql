-- The demo's edX-like source, seeded by `lethe demo --source` (database `test`, for
-- cargo test, comes from MARIADB_DATABASE).
CREATE DATABASE IF NOT EXISTS edx CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
