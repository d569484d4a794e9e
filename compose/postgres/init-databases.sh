#!/bin/bash
# One role and one database per service, each role owning only its database (first start only:
# the postgres image runs /docker-entrypoint-initdb.d/ on an empty data volume). Each password
# comes from the file <SERVICE>_DB_PASSWORD_FILE names (a Docker secret, made by
# `make compose-secrets`), else from <SERVICE>_DB_PASSWORD; nothing secret lives in this file.
set -euo pipefail

for service in identity catalog inventory orders payments notifications views; do
    var="${service^^}_DB_PASSWORD"
    file_var="${var}_FILE"
    if [[ -n "${!file_var:-}" ]]; then
        password="$(< "${!file_var}")"
    else
        password="${!var:?$var or $file_var must be set}"
    fi
    psql --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        --set role="$service" --set password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
done
