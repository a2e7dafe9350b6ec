#!/bin/sh
# Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d):
# one login role and one database per service, so the coordinator and each department's
# node keep their data apart (each role owns its database; PUBLIC may not connect).
# The entrypoint may source this file rather than run it: no `set`, no `exit` here.

create_database() {
    # $1 role and database name, $2 its password
    psql --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        --set name="$1" --set password="$2" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
}

create_database coordinator "${COORDINATOR_DB_PASSWORD:?COORDINATOR_DB_PASSWORD is not set}"
create_database node_tax "${NODE_TAX_DB_PASSWORD:?NODE_TAX_DB_PASSWORD is not set}"
create_database node_market "${NODE_MARKET_DB_PASSWORD:?NODE_MARKET_DB_PASSWORD is not set}"
create_database node_social "${NODE_SOCIAL_DB_PASSWORD:?NODE_SOCIAL_DB_PASSWORD is not set}"
