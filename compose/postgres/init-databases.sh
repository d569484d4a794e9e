#!/bin/bash
# One role and one database per service, each role owning only its database (first start only:
# the postgres image runs /docker-entrypoint-initdb.d/ on an empty data volume). Passwords come
# from <SERVICE>_DB_PASSWORD, set in compose/.env; nothing secret lives in this file.
set -euo pipefail

for service in identity catalog inventory orders payments notifications; do
    var="${service^^}_DB_PASSWORD"
    password="${!var:?$var is not set}"
    psql --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        --set role="$service" --set password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
done
