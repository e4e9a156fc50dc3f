/* tests/fixture_extension/pg_exclusive_backup--1.0.sql */

\echo Use "CREATE EXTENSION pg_exclusive_backup" to load this file. \quit

CREATE FUNCTION pg_start_backup(label text, fast boolean DEFAULT false)
RETURNS pg_lsn
AS 'MODULE_PATHNAME', 'pg_start_backup'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

-- No wait_for_archive parameter, as documented; the stop still waits for the
-- WAL archive, without end while archiving fails (see the C source).
CREATE FUNCTION pg_stop_backup()
RETURNS pg_lsn
AS 'MODULE_PATHNAME', 'pg_stop_backup'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION pg_is_in_backup()
RETURNS boolean
AS 'MODULE_PATHNAME', 'pg_is_in_backup'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;

CREATE FUNCTION pg_backup_start_time()
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'pg_backup_start_time'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;

-- Superuser only by default, as the built-in exclusive API was up to 14;
-- a superuser may GRANT EXECUTE to a backup role.
REVOKE EXECUTE ON FUNCTION pg_start_backup(text, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_stop_backup() FROM PUBLIC;

-- Remove the built-in non-exclusive functions from this database for good.
-- A session that ran pg_start_backup() here keeps its backend-local backup
-- state at "running" (the stop usually happens in another session), and the
-- built-in pg_backup_stop() trusts that state: called in such a session it
-- would end the exclusive backup behind backup_label's back and decrement the
-- shared backup counter a second time.  Other databases keep them.
-- They are pinned, so DROP FUNCTION refuses; deleting the catalog rows is the
-- only way.  These rows are not extension members, so DROP EXTENSION does not
-- bring them back.  to_regprocedure() makes this a no-op when already gone.
DELETE FROM pg_catalog.pg_description
 WHERE classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass
   AND objoid IN (pg_catalog.to_regprocedure('pg_catalog.pg_backup_start(text, boolean)'),
                  pg_catalog.to_regprocedure('pg_catalog.pg_backup_stop(boolean)'));
DELETE FROM pg_catalog.pg_init_privs
 WHERE classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass
   AND objoid IN (pg_catalog.to_regprocedure('pg_catalog.pg_backup_start(text, boolean)'),
                  pg_catalog.to_regprocedure('pg_catalog.pg_backup_stop(boolean)'));
DELETE FROM pg_catalog.pg_proc
 WHERE oid IN (pg_catalog.to_regprocedure('pg_catalog.pg_backup_start(text, boolean)'),
               pg_catalog.to_regprocedure('pg_catalog.pg_backup_stop(boolean)'));
