"""Child process of test_crash: works a queue hard and prints every acknowledgement.

Usage: crash_child.py QUEUE_DIR SEED. Lines on stdout (flushed as soon as the call that
acknowledged them returned): "S id" submitted, "Q id opstatus,... nlog" seen by a query,
"C id" cancel accepted, "A id" archived. The parent SIGKILLs this process at random.
"""

import random
import sys
import threading

from jqueue.queue import JobQueue

OUT = threading.Lock()


def say(*words):
    with OUT:
        sys.stdout.write(" ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()


def opcode(rng):
    kind = rng.random()
    if kind < 0.4:
        return {"OP_ID": "OP_TEST_DELAY", "duration": 0}
    if kind < 0.7:
        return {"OP_ID": "OP_TEST_JQUEUE", "log_messages": ["m%d" % i for i in range(3)]}
    if kind < 0.85:
        return {"OP_ID": "OP_TEST_DELAY", "duration": rng.choice([0.001, 0.01, 0.05])}
    return {"OP_ID": "OP_TEST_JQUEUE", "fail": True}


def submitter(queue, seed, ids):
    rng = random.Random(seed)
    while True:
        if rng.random() < 0.2:
            jobs = [[opcode(rng)] for _ in range(rng.randint(1, 4))]
            for ok, job_id in queue.submit_many_jobs(jobs):
                if ok:
                    ids.append(job_id)
                    say("S", job_id)
        else:
            job_id = queue.submit_job([opcode(rng) for _ in range(rng.randint(1, 3))])
            ids.append(job_id)
            say("S", job_id)


def meddler(queue, seed, ids):
    rng = random.Random(seed)
    while True:
        if len(ids) < 5:
            threading.Event().wait(0.001)
            continue
        job_id = rng.choice(ids[-50:])
        action = rng.random()
        if action < 0.3:
            if queue.cancel_job(job_id)[0]:
                say("C", job_id)
        elif action < 0.5:
            if queue.archive_job(job_id):
                say("A", job_id)
        else:
            row = queue.query_jobs([job_id], ["opstatus", "oplog"])[0]
            if row is not None:
                say("Q", job_id, ",".join(row[0]), sum(len(log) for log in row[1]))


def main():
    path, seed = sys.argv[1], int(sys.argv[2])
    queue = JobQueue(path, workers=2, checkpoint_interval=0.02)
    say("OPEN", queue.recovery.max_id)
    ids = []
    threads = [threading.Thread(target=submitter, args=(queue, seed + n, ids), daemon=True)
               for n in range(3)]
    threads.append(threading.Thread(target=meddler, args=(queue, seed, ids), daemon=True))
    for thread in threads:
        thread.start()
    threading.Event().wait(3600)


if __name__ == "__main__":
    main()
