"""jq-masterd's memory under a stream of large valid requests stays bounded.

A real daemon takes, three times over, a job with a 15 MiB comment and a 10,000-opcode
job (each canceled and archived, so that what stays is only the queue's live data), then
5,000 jobs in one SubmitManyJobs. Its peak resident size (VmHWM) must stay below 8 times
the message size limit over its idle size: large requests pass through a few buffers of
their size at once, and those are given back (see jqueue.daemon.common.tune_malloc).
"""

from daemon_helpers import RawLuxi, delay, write_config

from jqueue import constants

LIMIT = constants.LUXI_MAX_MESSAGE_BYTES
COMMENT = "x" * (15 * 1024 * 1024)


def test_peak_memory_under_large_requests_is_bounded(daemons, tmp_path):
    """Peak RSS over idle RSS stays below 8x the message size limit."""
    config = write_config(tmp_path / "jq.toml", workers=0, max_message_bytes=LIMIT)
    daemon = daemons(config=config)
    with RawLuxi(daemon.socket, timeout=120) as raw:
        raw.ok("QueryJobs", [[], ["id"]])
        idle = daemon.proc_status("VmRSS") * 1024
        for _ in range(3):
            for ops in ([delay(comment=COMMENT)], [delay()] * 10000):
                job_id = raw.ok("SubmitJob", [ops])
                assert raw.ok("CancelJob", [job_id])[0] is True
                assert raw.ok("ArchiveJob", [job_id]) is True
        results = raw.ok("SubmitManyJobs", [[[delay()]] * 5000])
        assert all(ok for ok, _ in results)
        assert raw.ok("QueryJobs", [[results[-1][1]], ["status"]]) == [["queued"]]
    peak = daemon.proc_status("VmHWM") * 1024
    figure = "peak %d MiB over an idle %d MiB (limit %d MiB)" % (
        (peak - idle) >> 20, idle >> 20, (8 * LIMIT) >> 20)
    print(figure)  # pytest -s shows it
    assert peak - idle < 8 * LIMIT, figure
