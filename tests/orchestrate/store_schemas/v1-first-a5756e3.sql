CREATE TABLE images ("workflow_id" TEXT, "uri" TEXT, "state" TEXT, "digest" TEXT, "error" TEXT, PRIMARY KEY ("workflow_id", "uri"));
CREATE TABLE join_tokens ("token_hash" TEXT, "node" TEXT, "created" REAL, PRIMARY KEY ("token_hash"));
CREATE TABLE nodes ("name" TEXT, "endpoint" TEXT, "agent_token" BLOB, "cores" INTEGER, "memory_bytes" INTEGER, "devices" TEXT, "labels" TEXT, "architecture" TEXT, "registered" REAL, "last_seen" REAL, PRIMARY KEY ("name"));
CREATE TABLE secrets ("owner" TEXT, "name" TEXT, "sealed" BLOB, "size" INTEGER, "created" REAL, PRIMARY KEY ("owner", "name"));
CREATE TABLE tasks ("workflow_id" TEXT, "key" TEXT, "job" TEXT, "index" INTEGER, "seq" INTEGER, "state" TEXT, "attempt" INTEGER, "nodes" TEXT, "leases" TEXT, "containers" TEXT, "exit_code" INTEGER, "started" REAL, "finished" REAL, "error" TEXT, "waiting_for" TEXT, PRIMARY KEY ("workflow_id", "key"));
CREATE TABLE transfers ("workflow_id" TEXT, "volume" TEXT, "direction" TEXT, "seq" INTEGER, "source" TEXT, "destination" TEXT, "secret" TEXT, "state" TEXT, "bytes_done" INTEGER, "bytes_total" INTEGER, "sha256" TEXT, "error" TEXT, PRIMARY KEY ("workflow_id", "volume", "direction", "seq"));
CREATE TABLE volumes ("workflow_id" TEXT, "name" TEXT, "reference" TEXT, "path" TEXT, "ephemeral" INTEGER, "state" TEXT, "error" TEXT, PRIMARY KEY ("workflow_id", "name"));
CREATE TABLE workflows ("id" TEXT, "name" TEXT, "run" INTEGER, "owner" TEXT, "file_name" TEXT, "fuzzfile" TEXT, "content_hash" TEXT, "state" TEXT, "error" TEXT, "created" REAL, "started" REAL, "finished" REAL, "cancel_requested" INTEGER, PRIMARY KEY ("id"));
PRAGMA user_version=1;
