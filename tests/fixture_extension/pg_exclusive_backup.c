/*-------------------------------------------------------------------------
 *
 * pg_exclusive_backup.c
 *		Exclusive low-level backup API (pg_start_backup / pg_stop_backup)
 *		for PostgreSQL 15 and later.
 *
 * Test fixture for the pgexclusive.backup Ansible collection, written from
 * the documented behaviour of the pg_exclusive_backup extension on top of
 * the server's own backup internals (do_pg_backup_start/do_pg_backup_stop).
 *
 * "A backup is in progress" means: backup_label exists in the data
 * directory.  The file is the only state shared between the session that
 * starts a backup and the (usually different) session that stops it.
 *
 * Session state.  do_pg_backup_start() bumps the shared running-backups
 * counter (which forces full-page writes) and sets the calling backend's
 * private sessionBackupState to RUNNING; do_pg_backup_stop() decrements the
 * counter and sets the *calling* backend's flag to NONE.  Neither reads the
 * flag (checked by disassembling the 15, 16 and 18 servers; the SQL-level
 * pg_backup_start/pg_backup_stop are what check it), so a stop in session B
 * correctly ends a backup started in session A, and a later start in A works
 * again.  A's flag stays RUNNING meanwhile; nothing consults it because
 *	- we never register the session abort handler: the backup must outlive
 *	  the starting session (every Ansible task connects anew);
 *	- CREATE EXTENSION removes the built-in pg_backup_start/pg_backup_stop
 *	  from this database, whose session-state check the stale flag would
 *	  fool.
 * Known limitation: from 16 on, do_pg_backup_start() cleans up its own
 * failures (e.g. a cancelled checkpoint wait) with do_pg_abort_backup(...,
 * true), which asserts that the session flag is NONE.  In a session whose
 * flag is stale that is right on production builds but trips the Assert on
 * --enable-cassert builds.  15 uses a different callback there.
 *
 * IDENTIFICATION
 *		tests/fixture_extension/pg_exclusive_backup.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/xlog.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "pgtime.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#if PG_VERSION_NUM >= 160000
#include "access/xlogbackup.h"
#include "nodes/miscnodes.h"
#endif

#if PG_VERSION_NUM < 150000
#error "pg_exclusive_backup is for PostgreSQL 15 and later; 14 and earlier have the exclusive API built in"
#endif

#ifdef PG_MODULE_MAGIC_EXT
PG_MODULE_MAGIC_EXT(.name = "pg_exclusive_backup",.version = "1.0");
#else
PG_MODULE_MAGIC;
#endif

/*
 * Files are written under a temporary name and renamed into place, so that a
 * crash never leaves a truncated backup_label that would then steer crash
 * recovery.
 */
#define BACKUP_LABEL_TMP	BACKUP_LABEL_FILE ".tmp"
#define TABLESPACE_MAP_TMP	TABLESPACE_MAP ".tmp"

/* Lock key; "pgeb".  field4 = 3 is outside pg_advisory_lock()'s 1 and 2. */
#define PGEB_LOCK_KEY		0x70676562
#define PGEB_LOCK_CLASS		3

/* The fields of a backup_label this extension needs. */
typedef struct ParsedLabel
{
	XLogRecPtr	startpoint;
	XLogRecPtr	checkpointloc;
	TimeLineID	starttli;
	bool		from_standby;
	char	   *starttime;		/* START TIME value, as written */
	char	   *name;			/* LABEL value */
} ParsedLabel;

PG_FUNCTION_INFO_V1(pg_start_backup);
PG_FUNCTION_INFO_V1(pg_stop_backup);
PG_FUNCTION_INFO_V1(pg_is_in_backup);
PG_FUNCTION_INFO_V1(pg_backup_start_time);

static void
check_not_in_recovery(void)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("recovery is in progress"),
				 errhint("WAL control functions cannot be executed during recovery.")));
}

/*
 * Serialize start and stop across the whole cluster.
 *
 * Both are check-then-act on backup_label (start: "absent, so start and
 * write it"; stop: "present, so read, remove and stop"), so two racing
 * sessions must not interleave, whichever database they are connected to.
 * A heavyweight lock fits: the lock table is shared by all databases, and a
 * tag whose database field is InvalidOid is cluster-wide and can never
 * collide with pg_advisory_lock(), which always uses MyDatabaseId.  Unlike an
 * LWLock it needs no shared memory reserved at server start (this module is
 * not in shared_preload_libraries), may be held across the start's
 * checkpoint wait, honours lock_timeout and query cancel, shows in pg_locks,
 * and is released by transaction abort or backend exit on any error path.
 * It is transaction-level so that the loser of a race waits until the
 * winner's label is on disk and then sees it, and so that nothing has to
 * release it explicitly.
 */
static void
lock_backup_control(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, InvalidOid, PGEB_LOCK_KEY, 0, PGEB_LOCK_CLASS);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

static bool
file_exists(const char *path)
{
	struct stat st;

	if (stat(path, &st) == 0)
		return true;
	if (errno != ENOENT)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat file \"%s\": %m", path)));
	return false;
}

/* durable_unlink() complains about ENOENT; a missing file is fine here. */
static void
remove_if_exists(const char *path, int elevel)
{
	struct stat st;

	if (stat(path, &st) == 0)
		(void) durable_unlink(path, elevel);
}

/* Returns the whole of backup_label, or NULL when there is none. */
static char *
read_backup_label(void)
{
	FILE	   *fp;
	StringInfoData buf;
	char		chunk[1024];
	size_t		n;

	fp = AllocateFile(BACKUP_LABEL_FILE, "r");
	if (fp == NULL)
	{
		if (errno == ENOENT)
			return NULL;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read file \"%s\": %m", BACKUP_LABEL_FILE)));
	}
	initStringInfo(&buf);
	while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
		appendBinaryStringInfo(&buf, chunk, (int) n);
	if (ferror(fp))
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read file \"%s\": %m", BACKUP_LABEL_FILE)));
	if (FreeFile(fp))
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not close file \"%s\": %m", BACKUP_LABEL_FILE)));
	return buf.data;
}

static void
invalid_label(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("invalid data in file \"%s\"", BACKUP_LABEL_FILE)));
}

/*
 * Value of the first line that starts with "key" (e.g. "LABEL: "), copied up
 * to the end of the line; NULL if there is no such line.
 */
static char *
label_value(const char *content, const char *key)
{
	size_t		keylen = strlen(key);
	const char *line = content;

	while (line != NULL && *line != '\0')
	{
		const char *eol = strchr(line, '\n');

		if (strncmp(line, key, keylen) == 0)
		{
			const char *val = line + keylen;

			return pnstrdup(val, eol ? (Size) (eol - val) : strlen(val));
		}
		line = eol ? eol + 1 : NULL;
	}
	return NULL;
}

/* LSNs are %X/%X up to 17 and %X/%08X from 18 on; %X/%X reads both. */
static XLogRecPtr
label_lsn(const char *content, const char *key)
{
	char	   *val = label_value(content, key);
	uint32		hi = 0,
				lo = 0;

	if (val == NULL || sscanf(val, "%X/%X", &hi, &lo) != 2)
		invalid_label();
	return ((uint64) hi) << 32 | lo;
}

static void
parse_label(const char *content, ParsedLabel *lbl)
{
	char	   *val;

	memset(lbl, 0, sizeof(*lbl));
	lbl->startpoint = label_lsn(content, "START WAL LOCATION: ");
	lbl->checkpointloc = label_lsn(content, "CHECKPOINT LOCATION: ");

	val = label_value(content, "START TIMELINE: ");
	if (val == NULL || sscanf(val, "%u", &lbl->starttli) != 1)
		invalid_label();

	val = label_value(content, "BACKUP FROM: ");
	if (val == NULL)
		invalid_label();
	lbl->from_standby = (strcmp(val, "standby") == 0);

	lbl->starttime = label_value(content, "START TIME: ");
	lbl->name = label_value(content, "LABEL: ");
	if (lbl->starttime == NULL || lbl->name == NULL)
		invalid_label();
}

/*
 * START TIME is written with log_timezone and its abbreviation.  The server's
 * timestamptz input is the primary parser (the abbreviation settles DST
 * ambiguity), as in the built-in pg_backup_start_time() up to 14.  It must
 * not fail, though: an abbreviation unknown to the session's
 * timezone_abbreviations (a POSIX-style log_timezone, say) would otherwise
 * make pg_stop_backup() fail and leave the backup running.  So errors are
 * caught softly (16+: soft input errors; 15: the decoder timestamptz_in uses,
 * which returns error codes) and the fields are then read as local time in
 * log_timezone.
 */
static TimestampTz
parse_start_time(char *str)
{
	struct pg_tm tm;
	int			tz;
	TimestampTz ts;

#if PG_VERSION_NUM >= 160000
	ErrorSaveContext escontext = {T_ErrorSaveContext};
	Datum		result;

	if (DirectInputFunctionCallSafe(timestamptz_in, str, InvalidOid, -1,
									(Node *) &escontext, &result))
		return DatumGetTimestampTz(result);
#else
	char		workbuf[MAXDATELEN + MAXDATEFIELDS];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	fsec_t		fsec;

	if (ParseDateTime(str, workbuf, sizeof(workbuf), field, ftype,
					  MAXDATEFIELDS, &nf) == 0 &&
		DecodeDateTime(field, ftype, nf, &dtype, &tm, &fsec, &tz) == 0 &&
		dtype == DTK_DATE &&
		tm2timestamp(&tm, fsec, &tz, &ts) == 0)
		return ts;
#endif

	memset(&tm, 0, sizeof(tm));
	if (sscanf(str, "%d-%d-%d %d:%d:%d",
			   &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
			   &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
		invalid_label();
	tz = DetermineTimeZoneOffset(&tm, log_timezone);
	if (tm2timestamp(&tm, 0, &tz, &ts) != 0)
		invalid_label();
	return ts;
}

/*
 * The server writes "BACKUP METHOD: streamed"; the documented extension
 * writes "pg_start_backup" instead, and restores depend on which one a copy
 * carries, so reproduce it exactly.
 */
static char *
exclusive_label_content(const char *content)
{
	static const char streamed[] = "\nBACKUP METHOD: streamed\n";
	const char *pos = strstr(content, streamed);
	StringInfoData buf;

	if (pos == NULL)
		elog(ERROR, "backup label built by the server has no \"BACKUP METHOD: streamed\" line");

	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, content, (int) (pos - content));
	appendStringInfoString(&buf, "\nBACKUP METHOD: pg_start_backup\n");
	appendStringInfoString(&buf, pos + strlen(streamed));
	return buf.data;
}

static void
write_file_durably(const char *tmppath, const char *path,
				   const char *data, int len)
{
	FILE	   *fp;

	fp = AllocateFile(tmppath, PG_BINARY_W);
	if (fp == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", tmppath)));
	/* fflush here so that ENOSPC surfaces before the rename, not after. */
	if (fwrite(data, len, 1, fp) != 1 || fflush(fp) != 0 || ferror(fp))
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", tmppath)));
	if (FreeFile(fp))
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not close file \"%s\": %m", tmppath)));
	/* fsyncs the file, renames it, fsyncs the directory */
	(void) durable_rename(tmppath, path, ERROR);
}

/*
 * Error cleanup once do_pg_backup_start() has succeeded: without it a failed
 * label write would leave the server in backup mode (full-page writes forced)
 * with no backup_label, i.e. a backup nobody can see or stop.
 *
 * Any backup_label present here is ours: we checked it was absent under the
 * lock.  The start completed, so the session flag is RUNNING, which is what
 * do_pg_abort_backup(..., false) expects; it decrements the shared counter
 * once.  The argument means "emit a warning" on 15 and "called during backup
 * start" on 16+, where it also logs "aborting backup due to backend exiting
 * before pg_backup_stop was called": inaccurate here, but it comes together
 * with the real ERROR.
 */
static void
undo_backup_start(int code, Datum arg)
{
	(void) unlink(BACKUP_LABEL_TMP);
	(void) unlink(TABLESPACE_MAP_TMP);
	remove_if_exists(BACKUP_LABEL_FILE, LOG);
	remove_if_exists(TABLESPACE_MAP, LOG);
	do_pg_abort_backup(code, BoolGetDatum(false));
}

Datum
pg_start_backup(PG_FUNCTION_ARGS)
{
	char	   *backupid = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		fast = PG_GETARG_BOOL(1);
	StringInfo	tblspcmap = makeStringInfo();
	List	   *tablespaces = NIL;
	XLogRecPtr	startpoint;

#if PG_VERSION_NUM >= 160000
	BackupState *state = (BackupState *) palloc0(sizeof(BackupState));
#else
	StringInfo	labelfile = makeStringInfo();
	TimeLineID	starttli;
#endif

	check_not_in_recovery();
	lock_backup_control();

	if (file_exists(BACKUP_LABEL_FILE))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("exclusive backup is already in progress"),
				 errhint("Run pg_stop_backup() and try again.")));

#if PG_VERSION_NUM >= 160000
	do_pg_backup_start(backupid, fast, &tablespaces, state, tblspcmap);
	startpoint = state->startpoint;
#else
	startpoint = do_pg_backup_start(backupid, fast, &starttli, labelfile,
									&tablespaces, tblspcmap);
#endif

	PG_ENSURE_ERROR_CLEANUP(undo_backup_start, (Datum) 0);
	{
		char	   *content;

#if PG_VERSION_NUM >= 160000
		content = exclusive_label_content(build_backup_content(state, false));
#else
		content = exclusive_label_content(labelfile->data);
#endif

		/*
		 * tablespace_map before backup_label: backup_label is what marks the
		 * backup as in progress, so it must appear last.  A stale map from
		 * an earlier, interrupted backup must not end up in this copy.
		 */
		if (tblspcmap->len > 0)
			write_file_durably(TABLESPACE_MAP_TMP, TABLESPACE_MAP,
							   tblspcmap->data, tblspcmap->len);
		else
			remove_if_exists(TABLESPACE_MAP, ERROR);

		write_file_durably(BACKUP_LABEL_TMP, BACKUP_LABEL_FILE,
						   content, (int) strlen(content));
	}
	PG_END_ENSURE_ERROR_CLEANUP(undo_backup_start, (Datum) 0);

	PG_RETURN_LSN(startpoint);
}

Datum
pg_stop_backup(PG_FUNCTION_ARGS)
{
	char	   *content;
	ParsedLabel lbl;
	XLogRecPtr	stoppoint;

#if PG_VERSION_NUM >= 160000
	BackupState *state = (BackupState *) palloc0(sizeof(BackupState));
#else
	TimeLineID	stoptli;
#endif

	check_not_in_recovery();
	lock_backup_control();

	content = read_backup_label();
	if (content == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("exclusive backup not in progress"),
				 errhint("Did you call pg_start_backup()?")));

	/* Reject a damaged label before anything is changed. */
	parse_label(content, &lbl);

#if PG_VERSION_NUM >= 160000

	/*
	 * Rebuild the state do_pg_backup_start() returned in the starting
	 * session.  Zeroed (palloc0) so that fields added later, such as 17's
	 * istartpoint/istarttli for incremental backups, stay invalid.
	 */
	strlcpy(state->name, lbl.name, sizeof(state->name));
	state->startpoint = lbl.startpoint;
	state->starttli = lbl.starttli;
	state->checkpointloc = lbl.checkpointloc;
	state->starttime = timestamptz_to_time_t(parse_start_time(lbl.starttime));
	state->started_in_recovery = lbl.from_standby;
#endif

	/*
	 * Remove the files before ending the backup, as the exclusive stop did up
	 * to 14.  If the removal fails, the backup simply remains in progress.
	 * The other order could end the backup and then leave backup_label
	 * behind; the next stop would then decrement the shared backup counter a
	 * second time, and a counter that is off stops forcing full-page writes
	 * during later backups.  A tablespace_map that survives on its own is
	 * ignored by the server and removed by the next start.
	 */
	(void) durable_unlink(BACKUP_LABEL_FILE, ERROR);
	remove_if_exists(TABLESPACE_MAP, WARNING);

	/*
	 * waitforarchive = true, as the documented extension behaves: its SQL
	 * declares no wait_for_archive parameter, yet its stop waits until the
	 * history file and the last segment are archived, without end while
	 * archiving fails (wait event BackupWaitWalArchive; after 60 s the
	 * warning "still waiting for all required WAL segments to be archived").
	 * The backup has ended by then: backup_label is gone and the running
	 * backups counter is decremented before the wait.  A statement_timeout
	 * or pg_cancel_backend() ends the wait; the lock above is released with
	 * the aborted transaction.
	 */
#if PG_VERSION_NUM >= 160000
	do_pg_backup_stop(state, true);
	stoppoint = state->stoppoint;
#else

	/*
	 * 15 parses START WAL LOCATION itself and copies the remaining lines of
	 * the label, our BACKUP METHOD included, into the backup history file.
	 */
	stoppoint = do_pg_backup_stop(content, true, &stoptli);
#endif

	PG_RETURN_LSN(stoppoint);
}

Datum
pg_is_in_backup(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(file_exists(BACKUP_LABEL_FILE));
}

Datum
pg_backup_start_time(PG_FUNCTION_ARGS)
{
	char	   *content = read_backup_label();
	char	   *val;

	if (content == NULL)
		PG_RETURN_NULL();
	val = label_value(content, "START TIME: ");
	if (val == NULL)
		invalid_label();
	PG_RETURN_TIMESTAMPTZ(parse_start_time(val));
}
