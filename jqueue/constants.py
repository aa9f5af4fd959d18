"""Vocabulary of the job queue: statuses, priorities, field and file names.

This module imports nothing, so that every other module may import it.
All values are plain strings or integers and serialize as they are.
"""

# Job and opcode statuses (the same strings for both, as in Ganeti).
JOB_STATUS_QUEUED = "queued"
JOB_STATUS_WAITING = "waiting"
JOB_STATUS_CANCELING = "canceling"
JOB_STATUS_RUNNING = "running"
JOB_STATUS_CANCELED = "canceled"
JOB_STATUS_SUCCESS = "success"
JOB_STATUS_ERROR = "error"

OP_STATUS_QUEUED = JOB_STATUS_QUEUED
OP_STATUS_WAITING = JOB_STATUS_WAITING
OP_STATUS_CANCELING = JOB_STATUS_CANCELING
OP_STATUS_RUNNING = JOB_STATUS_RUNNING
OP_STATUS_CANCELED = JOB_STATUS_CANCELED
OP_STATUS_SUCCESS = JOB_STATUS_SUCCESS
OP_STATUS_ERROR = JOB_STATUS_ERROR

JOB_STATUS_ALL = frozenset([
    JOB_STATUS_QUEUED, JOB_STATUS_WAITING, JOB_STATUS_CANCELING, JOB_STATUS_RUNNING,
    JOB_STATUS_CANCELED, JOB_STATUS_SUCCESS, JOB_STATUS_ERROR,
])
OP_STATUS_ALL = JOB_STATUS_ALL

#: Statuses a job never leaves.
JOBS_FINALIZED = frozenset([JOB_STATUS_CANCELED, JOB_STATUS_SUCCESS, JOB_STATUS_ERROR])
OPS_FINALIZED = JOBS_FINALIZED
#: Statuses of a job that has not started running any opcode yet (or is being canceled).
JOBS_PENDING = frozenset([JOB_STATUS_QUEUED, JOB_STATUS_WAITING, JOB_STATUS_CANCELING])

# Priorities: lower value runs first.
OP_PRIO_HIGHEST = -20
OP_PRIO_HIGH = -10
OP_PRIO_NORMAL = 0
OP_PRIO_LOW = 10
OP_PRIO_LOWEST = 19
OP_PRIO_DEFAULT = OP_PRIO_NORMAL
OP_PRIO_NAMES = {"high": OP_PRIO_HIGH, "normal": OP_PRIO_NORMAL, "low": OP_PRIO_LOW}

#: Returned by WaitForJobChanges when nothing changed before the timeout.
JOB_NOTCHANGED = "nochange"

# Log entry types.
ELOG_MESSAGE = "message"
ELOG_JQUEUE_TEST = "jqueue-test"

# Opcode results and messages with a fixed text.
MSG_PRECEDING_FAILED = "Preceding opcode failed"
MSG_UNCLEAN_SHUTDOWN = "Unclean master daemon shutdown"
MSG_CANCELED = "Job canceled by request"

# Command jobs (OP_COMMAND_RUN): the opcode, the reasons an attempt ends (BEX's words),
# and the states of an opcode's command attempts.
OP_COMMAND_RUN = "OP_COMMAND_RUN"
#: A group of jobs (jqueue.groupjob): no work of its own.
OP_GROUP = "OP_GROUP"
REASON_OK = "OK"
REASON_FAILED = "FAILED"
REASON_TIMEOUT = "TIMEOUT"
REASON_KILLED = "KILLED"
REASON_INTERR = "INTERR"
REASON_NOXFER = "NOXFER"
REASON_NOPING = "NOPING"
REASON_NODE_LOST = "NODE_LOST"
REASON_NO_MATCHING_NODE = "NO_MATCHING_NODE"
REASONS = frozenset([REASON_OK, REASON_FAILED, REASON_TIMEOUT, REASON_KILLED, REASON_INTERR,
                     REASON_NOXFER, REASON_NOPING, REASON_NODE_LOST, REASON_NO_MATCHING_NODE])
#: Why a job that has not started (or waits between attempts) does not run now: the
#: query fields wait_reason (one of these) and wait_message (what it waits for, in words);
#: Slurm's squeue says the same with its REASON column.
WAIT_HELD = "HELD"
WAIT_NOT_BEFORE = "NOT_BEFORE"
WAIT_DEPENDENCY = "DEPENDENCY"
WAIT_BACKOFF = "BACKOFF"
WAIT_WORKERS = "WORKERS"
WAIT_NO_MATCHING_NODE = REASON_NO_MATCHING_NODE
WAIT_NODE = "NODE_UNAVAILABLE"
WAIT_SLOTS = "SLOTS"
#: Its memory_max and those of the commands running on its node are more than the node's.
WAIT_MEMORY = "MEMORY"
WAIT_REASONS = (WAIT_HELD, WAIT_NOT_BEFORE, WAIT_DEPENDENCY, WAIT_BACKOFF, WAIT_WORKERS,
                WAIT_NO_MATCHING_NODE, WAIT_NODE, WAIT_SLOTS, WAIT_MEMORY)
#: Waiting for a slot on its node (the opcode is queued).
ATTEMPT_PENDING = "pending"
#: Journaled as started on its node before the node is asked: a crash cannot forget it.
ATTEMPT_STARTING = "starting"
ATTEMPT_RUNNING = "running"
#: Waiting out the back-off before the next attempt (the opcode is waiting).
ATTEMPT_RETRY_WAIT = "retry_wait"
ATTEMPT_ENDED = "ended"
#: Attempt states in which a node holds (or may hold) a process of the job.
ATTEMPTS_ON_NODE = frozenset([ATTEMPT_STARTING, ATTEMPT_RUNNING])
#: What a node says of its machine with its heartbeats (jqueue.exec.resources): the
#: 1-minute load average, its CPUs, its memory and what of it is available (bytes).
NODE_RESOURCES = ("load", "cpus", "mem_total", "mem_available", "mem_reserved")
DEFAULT_LOG_MAX_BYTES = 64 * 1024 * 1024
#: Bytes per second of a service's output its log takes at most, on average (jq-masterd's
#: service_log_rate); it may take 8 seconds' worth at once.
DEFAULT_SERVICE_LOG_RATE = 1024 * 1024
#: Output past a log's cap (a command's or a service's run's), dropped by the master, is
#: freed on its node once this much more of it was passed durably: a command or service
#: printing for ever must not fill the node's disk. What the log keeps stays on the node
#: until the attempt or run is forgotten (a master taking over with an older state, under
#: best effort, min_acks 0, reads it again there).
OUTPUT_RELEASE_BYTES = 32 * 1024 * 1024
DEFAULT_PROGRESS_PATTERN = "PROGRESS:%percent"
LOGS_DIR = "logs"

# Queue directory layout.
QUEUE_FORMAT_VERSION = 1
JOB_FILE_PREFIX = "job-"
SERIAL_FILE = "serial"
VERSION_FILE = "version"
DRAIN_FILE = "drain"
LOCK_FILE = "lock"
JOURNAL_FILE = "journal"
JOURNAL_OLD_FILE = "journal.old"
REPLICA_FILE = "replica"
REPLICATION_FILE = "replication"
ARCHIVE_DIR = "archive"
CORRUPT_DIR = "corrupt"
JOBS_PER_ARCHIVE_DIRECTORY = 10000
JOB_FILE_MODE = 0o640

# Limits and defaults.
DEFAULT_MAX_JOBS = 100000
DEFAULT_WORKERS = 25
DEFAULT_CHECKPOINT_INTERVAL = 5.0
DEFAULT_CHECKPOINT_BYTES = 32 * 1024 * 1024

# Job fields (query and WaitForJobChanges).
JOB_FIELDS = (
    "id", "status", "priority", "archived", "ops", "opresult", "opstatus", "oplog",
    "opstart", "opexec", "opend", "oppriority", "summary", "received_ts", "start_ts",
    "end_ts",
    # Command jobs (null for other jobs).
    "node", "attempt", "max_attempts", "exit_status", "signal", "timed_out", "reason",
    "progress", "global_progress", "log_bytes", "pid", "retry_at", "title",
    "memory_max", "max_rss", "cpu_time", "memory_exceeded", "rss",
    # Who submitted the job (HTTP clients).
    "owner",
    # Groups, holds and start times.
    "parent", "children", "total", "finished", "errors", "working", "counts", "held",
    "not_before", "notify", "notified", "notified_after",
    # Why a pending job does not run now.
    "wait_reason", "wait_message",
)

# Query result status codes (Ganeti's RS_*).
RS_NORMAL = 0
RS_UNKNOWN = 1
RS_NODATA = 2
RS_UNAVAIL = 3
RS_OFFLINE = 4

# Error codes carried by OpPrereqError (Ganeti's ECODE_*).
ECODE_INVAL = "wrong_input"
ECODE_NOENT = "unknown_entity"
ECODE_EXISTS = "already_exists"
ECODE_STATE = "wrong_state"

# LUXI (the client protocol) and the daemon's default paths.
DEFAULT_STATE_DIR = "/var/lib/jqueue"
DEFAULT_SOCKET = "/var/lib/jqueue/run/jqueue.sock"
#: Environment variable naming the LUXI socket of clients (jqctl, the library).
SOCKET_ENV_VAR = "JQ_SOCKET"

#: End of message: every LUXI message is UTF-8 JSON followed by this byte.
LUXI_EOM = b"\x03"
LUXI_KEY_METHOD = "method"
LUXI_KEY_ARGS = "args"
LUXI_KEY_VERSION = "version"
LUXI_KEY_SUCCESS = "success"
LUXI_KEY_RESULT = "result"

# LUXI method names (Ganeti's wire names).
LUXI_REQ_SUBMIT_JOB = "SubmitJob"
LUXI_REQ_SUBMIT_JOB_TO_DRAINED_QUEUE = "SubmitJobToDrainedQueue"
LUXI_REQ_SUBMIT_MANY_JOBS = "SubmitManyJobs"
LUXI_REQ_WAIT_FOR_JOB_CHANGE = "WaitForJobChange"
LUXI_REQ_CANCEL_JOB = "CancelJob"
LUXI_REQ_CHANGE_JOB_PRIORITY = "ChangeJobPriority"
LUXI_REQ_ARCHIVE_JOB = "ArchiveJob"
LUXI_REQ_AUTO_ARCHIVE_JOBS = "AutoArchiveJobs"
LUXI_REQ_QUERY_JOBS = "QueryJobs"
LUXI_REQ_QUERY_CONFIG_VALUES = "QueryConfigValues"
LUXI_REQ_SET_DRAIN_FLAG = "SetDrainFlag"
LUXI_REQ_QUERY = "Query"
LUXI_REQ_QUERY_FIELDS = "QueryFields"
# Our additions: the cluster methods of jq-masterd (same request and response form).
LUXI_REQ_CLUSTER_INFO = "ClusterInfo"
LUXI_REQ_LIST_NODES = "ListNodes"
LUXI_REQ_ADD_NODE = "AddNode"
LUXI_REQ_REMOVE_NODE = "RemoveNode"
LUXI_REQ_MODIFY_NODE = "ModifyNode"
LUXI_REQ_VERIFY_CLUSTER = "VerifyCluster"
LUXI_REQ_STEP_DOWN = "StepDown"
# Our additions: command jobs.
LUXI_REQ_READ_JOB_LOG = "ReadJobLog"
LUXI_REQ_SIGNAL_JOB = "SignalJob"
LUXI_REQ_QUERY_RUNNING = "QueryRunning"
# Our additions: the event stream.
LUXI_REQ_WAIT_FOR_EVENTS = "WaitForEvents"
#: How ReadJobLog and ReadServiceLog send a log's bytes (their optional 5th argument): as
#: text (invalid UTF-8 replaced; the default) or exactly, in base64 (our addition).
LOG_ENCODING_TEXT = "text"
LOG_ENCODING_BASE64 = "base64"
#: Longest piece of a log one ReadJobLog answers.
LUXI_MAX_LOG_READ = 4 * 1024 * 1024
# Our addition: the opcode catalogue.
LUXI_REQ_QUERY_OPCODES = "QueryOpcodes"
# Our additions: supervised services (jqueue.run.services).
LUXI_REQ_ADD_SERVICES = "AddServices"
LUXI_REQ_MODIFY_SERVICE = "ModifyService"
LUXI_REQ_REMOVE_SERVICE = "RemoveService"
LUXI_REQ_START_SERVICE = "StartService"
LUXI_REQ_STOP_SERVICE = "StopService"
LUXI_REQ_RESTART_SERVICE = "RestartService"
LUXI_REQ_QUERY_SERVICES = "QueryServices"
LUXI_REQ_READ_SERVICE_LOG = "ReadServiceLog"
# Our additions: a job's course and its groups.
LUXI_REQ_HOLD_JOB = "HoldJob"
LUXI_REQ_RELEASE_JOB = "ReleaseJob"
LUXI_REQ_RESET_JOB = "ResetJob"
LUXI_REQ_RETRY_JOB = "RetryJob"
LUXI_REQ_RESOLVE_JOB = "ResolveJob"
LUXI_REQ_PURGE_JOBS = "PurgeJobs"
LUXI_REQ_SUBMISSIONS = frozenset([
    LUXI_REQ_SUBMIT_JOB, LUXI_REQ_SUBMIT_JOB_TO_DRAINED_QUEUE, LUXI_REQ_SUBMIT_MANY_JOBS,
])

#: The only resource of Query and QueryFields.
QR_JOB = "job"

# Names answered by QueryConfigValues (at least these).
CONFIG_DRAIN_FLAG = "drain_flag"
CONFIG_MASTER_NODE = "master_node"
CONFIG_CLUSTER_NAME = "cluster_name"
#: Ours: the queue's health (view age and lag, disk condition), see JobQueue.status().
CONFIG_QUEUE_STATUS = "queue_status"
#: Ours: retention (policy, last pass, totals), see JobQueue.retention_status().
CONFIG_RETENTION = "retention"

# Server limits (defaults of jqueue.luxi.server.ServerLimits).
LUXI_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
LUXI_READ_TIMEOUT = 30.0
LUXI_IDLE_TIMEOUT = 600.0
LUXI_MAX_CONNECTIONS = 10000
LUXI_MAX_WAIT_TIMEOUT = 60.0
LUXI_MAX_PIPELINED = 64
LUXI_THREADS = 16

# Client defaults (jqueue.luxi.client.Client).
LUXI_CONNECT_TIMEOUT = 10.0
LUXI_TIMEOUT = 60.0
LUXI_MAX_RESPONSE_BYTES = 1024 * 1024 * 1024

#: Deepest nesting of a query filter (qlang) that is accepted.
QLANG_MAX_DEPTH = 64

# TLS and node RPC
#: Directory of the TLS files under the state directory, and the files in it.
TLS_DIR = "tls"
CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
NODE_CERT_FILE = "node.crt"
NODE_KEY_FILE = "node.key"
#: A node's certificate signing request (jqctl node init), copied to the signing node.
NODE_CSR_FILE = "node.csr"
#: Default validity, in days, of the cluster CA and of node certificates.
TLS_CA_DAYS = 3650
TLS_NODE_DAYS = 825
#: Node RPC: POST RPC_PATH_PREFIX + method, a JSON object body, a JSON answer.
RPC_PATH_PREFIX = "/rpc/"
RPC_KEY_SUCCESS = "success"
RPC_KEY_RESULT = "result"
#: Largest request body the server accepts (a larger one is answered with 413).
RPC_MAX_BODY_BYTES = 64 * 1024 * 1024
#: Largest answer the client reads.
RPC_MAX_RESPONSE_BYTES = 1024 * 1024 * 1024
#: Seconds a client waits for one call (connecting, sending, answer).
RPC_TIMEOUT = 10.0
#: Seconds the server keeps an idle kept-alive connection open.
RPC_IDLE_TIMEOUT = 300.0
#: Most connections a jq-noded serves at once (fitted to its open files limit: connlimit).
RPC_MAX_CONNECTIONS = 1024
#: Seconds a new RPC connection has to complete its TLS handshake before it is dropped.
RPC_HANDSHAKE_TIMEOUT = 10.0
#: Seconds a node's clock may differ from the master's before jq-masterd says so (its
#: log, jqctl node list): the times a node records (a service's since, an attempt's end)
#: are off by as much, and past minutes its certificates' dates stop agreeing.
CLOCK_SKEW_WARN = 10.0
